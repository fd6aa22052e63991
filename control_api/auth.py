"""Accounts and tokens: register, login, logout, refresh, ``/api/me``; the user and admin
guards every protected route calls.

Passwords: bcrypt, 12 rounds, hashed off the event loop. Tokens: JWT HS256 with ``jti``,
``sub``, ``email``, ``iat``, ``exp`` (7 days); a revoked ``jti`` sits in ``token_blacklist``
until it would have expired anyway (then it is purged). Brute force: failed logins are limited
per account and per client IP; a dummy hash is checked for unknown accounts so response time
does not reveal which emails exist.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import ipaddress
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import asyncpg
import bcrypt
import jwt
from aiohttp import web

from control_api.errors import ApiError
from control_api.ratelimit import too_many
from control_api.schema import E164, api, json_body, obj, string
from control_api.state import DB, LIMITS, SETTINGS

routes = web.RouteTableDef()

TOKEN_TTL = timedelta(days=7)
BCRYPT_ROUNDS = 12
SIGNUP_CREDITS = 10  # one credit ≈ one minute (seed 004 §6.1)
FREE_TIER_MAX_CALL_SECONDS = 300  # seed 004 §6.1: free tier, 5 minutes per call
_DUMMY_HASH = bcrypt.hashpw(b"dummy-password", bcrypt.gensalt(BCRYPT_ROUNDS))

PASSWORD = string(min_len=8, max_len=72)  # bcrypt uses at most 72 bytes; refuse, never truncate


@dataclass(frozen=True, slots=True)
class AuthUser:
    id: str
    email: str
    jti: str
    expires_at: datetime


USER = web.RequestKey("user", AuthUser)


def client_ip(request: web.Request) -> str:
    """The caller's IP. ``X-Forwarded-For`` is trusted only from a loopback peer (Caddy)."""
    peer = request.remote or "unknown"
    forwarded = request.headers.get("X-Forwarded-For")
    if forwarded:
        try:
            if ipaddress.ip_address(peer).is_loopback:
                return forwarded.split(",")[-1].strip() or peer
        except ValueError:
            pass
    return peer


async def hash_password(password: str) -> str:
    digest = await asyncio.to_thread(
        bcrypt.hashpw, password.encode(), bcrypt.gensalt(BCRYPT_ROUNDS)
    )
    return digest.decode()


async def check_password(password: str, hashed: str | None) -> bool:
    target = hashed.encode() if hashed else _DUMMY_HASH
    ok = await asyncio.to_thread(bcrypt.checkpw, password.encode(), target)
    return ok and hashed is not None


def issue_token(secret: str, user_id: str, email: str) -> tuple[str, datetime]:
    now = datetime.now(UTC)
    exp = now + TOKEN_TTL
    claims = {
        "jti": uuid.uuid4().hex,
        "sub": user_id,
        "email": email,
        "iat": int(now.timestamp()),
        "exp": int(exp.timestamp()),
    }
    return jwt.encode(claims, secret, algorithm="HS256"), exp


def _unauthorized(message: str) -> ApiError:
    return ApiError(401, "unauthorized", message, headers={"WWW-Authenticate": "Bearer"})


def _bearer(request: web.Request) -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


async def current_user(request: web.Request, *, optional: bool = False) -> AuthUser | None:
    """The authenticated user, or 401. Checks signature, expiry, revocation and bans."""
    cached = request.get(USER)
    if cached is not None:
        return cached
    token = _bearer(request)
    if token is None:
        if optional:
            return None
        raise _unauthorized("missing bearer token")
    try:
        claims = jwt.decode(
            token,
            request.app[SETTINGS].jwt_secret,
            algorithms=["HS256"],
            options={"require": ["exp", "iat", "sub", "jti"]},
        )
    except jwt.ExpiredSignatureError:
        raise _unauthorized("token expired") from None
    except jwt.PyJWTError:
        raise _unauthorized("invalid token") from None
    row = await request.app[DB].fetchrow(
        "SELECT u.id, u.email, u.is_banned, "
        "  EXISTS (SELECT 1 FROM token_blacklist b WHERE b.token_id = $2) AS revoked "
        "FROM users u WHERE u.id = $1",
        str(claims["sub"]),
        str(claims["jti"]),
    )
    if row is None:
        raise _unauthorized("account no longer exists")
    if row["revoked"]:
        raise _unauthorized("token revoked")
    if row["is_banned"]:
        raise ApiError(403, "account_banned", "this account is banned")
    request.app[LIMITS].per_user.check(row["id"], "requests")
    user = AuthUser(
        row["id"], row["email"], str(claims["jti"]), datetime.fromtimestamp(claims["exp"], UTC)
    )
    request[USER] = user
    return user


async def require_user(request: web.Request) -> AuthUser:
    user = await current_user(request)
    assert user is not None
    return user


async def require_admin(request: web.Request) -> str:
    """Bearer ``ADMIN_TOKEN`` (the bootstrap admin) or an active ``admin_users`` token."""
    token = _bearer(request)
    if token is None:
        raise _unauthorized("missing admin token")
    if hmac.compare_digest(token.encode(), request.app[SETTINGS].admin_token.encode()):
        return "bootstrap"
    digest = hashlib.sha256(token.encode()).hexdigest()
    admin_id = await request.app[DB].fetchval(
        "UPDATE admin_users SET last_seen_at = now() "
        "WHERE token_sha256 = $1 AND is_active RETURNING id",
        digest,
    )
    if admin_id is None:
        # Count failed admin attempts with the login limiter: an admin token is a password.
        wait = request.app[LIMITS].login_ip.hit(client_ip(request))
        if wait:
            raise too_many("failed admin authentications", wait)
        raise ApiError(403, "forbidden", "invalid admin token")
    return str(admin_id)


def user_json(row: asyncpg.Record) -> dict[str, object]:
    return {
        "id": row["id"],
        "email": row["email"],
        "name": row["name"],
        "phone": row["phone"],
        "created_at": row["created_at"].isoformat(),
    }


def _token_response(secret: str, row: asyncpg.Record, status: int = 200) -> web.Response:
    token, exp = issue_token(secret, row["id"], row["email"])
    return web.json_response(
        {
            "token": token,
            "token_type": "Bearer",
            "expires_at": exp.isoformat(),
            "user": user_json(row),
        },
        status=status,
    )


REGISTER = obj(
    {
        "email": string(min_len=3, max_len=255, fmt="email"),
        "password": PASSWORD,
        "name": string(max_len=255, nullable=True),
        "phone": string(pattern=E164, max_len=16, nullable=True),
    },
    ("email", "password"),
)


@routes.post("/api/auth/register")
@api("Create an account; returns a token", auth="none", body=REGISTER, status=201, tag="auth")
async def register(request: web.Request) -> web.Response:
    limits = request.app[LIMITS]
    limits.register_ip.check(client_ip(request), "registrations from this address")
    body = await json_body(request, REGISTER)
    email = body["email"].strip().lower()
    hashed = await hash_password(body["password"])
    pool = request.app[DB]
    async with pool.acquire() as conn, conn.transaction():
        try:
            row = await conn.fetchrow(
                "INSERT INTO users (email, password_hash, name, phone) VALUES ($1, $2, $3, $4) "
                "RETURNING id, email, name, phone, created_at",
                email,
                hashed,
                body.get("name"),
                body.get("phone"),
            )
        except asyncpg.UniqueViolationError:
            raise ApiError(409, "email_taken", "an account with this email exists") from None
        assert row is not None
        await conn.execute(
            "INSERT INTO user_credits (user_id, available_credits, max_call_duration_seconds) "
            "VALUES ($1, $2, $3)",
            row["id"],
            SIGNUP_CREDITS,
            FREE_TIER_MAX_CALL_SECONDS,
        )
        await conn.execute(
            "INSERT INTO credit_transactions (user_id, amount, type, description, balance_before,"
            " balance_after) VALUES ($1, $2, 'signup_bonus', 'Welcome credits', 0, $2)",
            row["id"],
            SIGNUP_CREDITS,
        )
        await conn.execute("INSERT INTO user_budget_settings (user_id) VALUES ($1)", row["id"])
    return _token_response(request.app[SETTINGS].jwt_secret, row, status=201)


LOGIN = obj(
    {"email": string(min_len=3, max_len=255), "password": string(min_len=1, max_len=72)},
    ("email", "password"),
)


@routes.post("/api/auth/login")
@api("Exchange email and password for a token", auth="none", body=LOGIN, tag="auth")
async def login(request: web.Request) -> web.Response:
    body = await json_body(request, LOGIN)
    email = body["email"].strip().lower()
    ip = client_ip(request)
    limits = request.app[LIMITS]
    wait = max(limits.login_account.retry_after(email), limits.login_ip.retry_after(ip))
    if wait:
        raise too_many("failed logins", wait)
    row = await request.app[DB].fetchrow(
        "SELECT id, email, name, phone, created_at, password_hash, is_banned FROM users "
        "WHERE email = $1",
        email,
    )
    if not await check_password(body["password"], row["password_hash"] if row else None):
        limits.login_account.hit(email)
        limits.login_ip.hit(ip)
        raise ApiError(401, "invalid_credentials", "wrong email or password")
    assert row is not None
    if row["is_banned"]:
        raise ApiError(403, "account_banned", "this account is banned")
    limits.login_account.reset(email)
    return _token_response(request.app[SETTINGS].jwt_secret, row)


async def _revoke(request: web.Request, user: AuthUser) -> None:
    await request.app[DB].execute(
        "INSERT INTO token_blacklist (token_id, user_id, expires_at) VALUES ($1, $2, $3) "
        "ON CONFLICT (token_id) DO NOTHING",
        user.jti,
        user.id,
        user.expires_at,
    )


@routes.post("/api/auth/logout")
@api("Revoke the current token", tag="auth", status=204)
async def logout(request: web.Request) -> web.Response:
    await _revoke(request, await require_user(request))
    return web.Response(status=204)


@routes.post("/api/auth/refresh")
@api("Swap the current token for a fresh one (the old one is revoked)", tag="auth")
async def refresh(request: web.Request) -> web.Response:
    user = await require_user(request)
    row = await request.app[DB].fetchrow(
        "SELECT id, email, name, phone, created_at FROM users WHERE id = $1", user.id
    )
    await _revoke(request, user)
    return _token_response(request.app[SETTINGS].jwt_secret, row)


@routes.get("/api/me")
@api("The current user with credits, limits and budget", tag="auth")
async def me(request: web.Request) -> web.Response:
    user = await require_user(request)
    row = await request.app[DB].fetchrow(
        "SELECT u.id, u.email, u.name, u.phone, u.created_at, c.available_credits, "
        "  c.subscription_tier, c.max_calls_per_day, c.max_call_duration_seconds, "
        "  b.max_cost_per_call_cents, b.max_monthly_spend_cents "
        "FROM users u LEFT JOIN user_credits c ON c.user_id = u.id "
        "LEFT JOIN user_budget_settings b ON b.user_id = u.id WHERE u.id = $1",
        user.id,
    )
    return web.json_response(
        {
            "user": user_json(row),
            "credits": {
                "available": row["available_credits"] or 0,
                "tier": row["subscription_tier"] or "free",
                "max_calls_per_day": row["max_calls_per_day"],
                "max_call_duration_seconds": row["max_call_duration_seconds"],
            },
            "budget": {
                "max_cost_per_call_cents": row["max_cost_per_call_cents"],
                "max_monthly_spend_cents": row["max_monthly_spend_cents"],
            },
        }
    )


async def purge_expired_tokens(pool: asyncpg.Pool) -> int:
    status = await pool.execute("DELETE FROM token_blacklist WHERE expires_at < now()")
    return int(status.split()[-1])


def setup(app: web.Application) -> None:
    app.router.add_routes(routes)
