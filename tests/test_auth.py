"""Guards accounts and tokens: bcrypt-12 hashes, JWT claims, logout/refresh revocation,
expired and tampered tokens, bans, login brute-force limits, and clear 400/409/413/415s."""

from __future__ import annotations

import time

import jwt

from control_api.state import LIMITS
from tests.api_harness import Harness


async def test_register_login_me_and_token_claims(api: Harness) -> None:
    status, body, _ = await api.request(
        "POST",
        "/api/auth/register",
        json={
            "email": "Ann@Example.com",
            "password": "s3cret-passw0rd",
            "name": "Ann",
            "phone": "+15551112222",
        },
    )
    assert status == 201 and body["user"]["email"] == "ann@example.com"
    claims = jwt.decode(body["token"], api.settings.jwt_secret, algorithms=["HS256"])
    assert set(claims) == {"jti", "sub", "email", "iat", "exp"}
    assert claims["sub"] == body["user"]["id"] and claims["exp"] - claims["iat"] == 7 * 86400
    stored = await api.db.fetchval(
        "SELECT password_hash FROM users WHERE email = 'ann@example.com'"
    )
    assert stored.startswith("$2b$12$") and "s3cret" not in stored

    status, body, _ = await api.request(
        "POST", "/api/auth/login", json={"email": "ANN@example.com", "password": "s3cret-passw0rd"}
    )
    assert status == 200 and body["token_type"] == "Bearer"
    _, me, _ = await api.request("GET", "/api/me", token=body["token"], expect=200)
    assert me["user"]["name"] == "Ann" and me["credits"]["tier"] == "free"
    assert me["budget"]["max_monthly_spend_cents"] == 10000


async def test_logout_and_refresh_revoke_the_old_token(api: Harness) -> None:
    token = await api.register("out@example.com")
    _, body, _ = await api.request("POST", "/api/auth/refresh", token=token, expect=200)
    fresh = body["token"]
    status, body, _ = await api.request("GET", "/api/me", token=token)
    assert status == 401 and body["error"]["message"] == "token revoked"
    await api.request("POST", "/api/auth/logout", token=fresh, expect=204)
    status, body, r = await api.request("GET", "/api/me", token=fresh)
    assert status == 401 and body["error"]["code"] == "unauthorized"
    assert r.headers["WWW-Authenticate"] == "Bearer"


async def test_missing_expired_tampered_and_foreign_tokens_are_refused(api: Harness) -> None:
    token = await api.register("tok@example.com")
    uid = await api.user_id(token)
    assert (await api.request("GET", "/api/me"))[0] == 401
    now = int(time.time())
    expired = jwt.encode(
        {"jti": "x", "sub": uid, "email": "e", "iat": now - 100, "exp": now - 10},
        api.settings.jwt_secret,
        algorithm="HS256",
    )
    status, body, _ = await api.request("GET", "/api/me", token=expired)
    assert status == 401 and body["error"]["message"] == "token expired"
    forged = jwt.encode(
        {"jti": "x", "sub": uid, "email": "e", "iat": now, "exp": now + 60},
        "another-secret-another-secret-another",
        algorithm="HS256",
    )
    assert (await api.request("GET", "/api/me", token=forged))[0] == 401
    none_alg = jwt.encode(
        {"jti": "x", "sub": uid, "iat": now, "exp": now + 60}, None, algorithm="none"
    )
    assert (await api.request("GET", "/api/me", token=none_alg))[0] == 401
    assert (await api.request("GET", "/api/me", token=token[:-3] + "abc"))[0] == 401
    no_jti = jwt.encode(
        {"sub": uid, "iat": now, "exp": now + 60}, api.settings.jwt_secret, algorithm="HS256"
    )
    assert (await api.request("GET", "/api/me", token=no_jti))[0] == 401


async def test_banned_users_are_refused_everywhere(api: Harness) -> None:
    token = await api.register("ban@example.com")
    uid = await api.user_id(token)
    admin = api.settings.admin_token
    await api.request(
        "POST", f"/admin/users/{uid}/ban", token=admin, json={"reason": "abuse"}, expect=200
    )
    status, body, _ = await api.request("GET", "/api/me", token=token)
    assert status == 403 and body["error"]["code"] == "account_banned"
    status, _, _ = await api.request(
        "POST",
        "/api/auth/login",
        json={"email": "ban@example.com", "password": "correct horse battery"},
    )
    assert status == 403
    await api.request("POST", f"/admin/users/{uid}/unban", token=admin, expect=200)
    assert (await api.request("GET", "/api/me", token=token))[0] == 200


async def test_failed_logins_are_limited_per_account(api: Harness) -> None:
    await api.register("brute@example.com")
    for _ in range(5):
        status, body, _ = await api.request(
            "POST", "/api/auth/login", json={"email": "brute@example.com", "password": "wrong"}
        )
        assert status == 401 and body["error"]["code"] == "invalid_credentials"
    status, body, r = await api.request(
        "POST",
        "/api/auth/login",
        json={"email": "brute@example.com", "password": "correct horse battery"},
    )
    assert status == 429 and body["error"]["code"] == "rate_limited"
    assert int(r.headers["Retry-After"]) >= 1
    # Unknown accounts answer exactly like wrong passwords (no account enumeration).
    status, body, _ = await api.request(
        "POST", "/api/auth/login", json={"email": "nobody@example.com", "password": "wrong"}
    )
    assert status == 401 and body["error"]["message"] == "wrong email or password"


async def test_failed_logins_are_limited_per_ip_across_accounts(api: Harness) -> None:
    api.app[LIMITS].login_ip.capacity = 3
    for i in range(3):
        await api.request(
            "POST", "/api/auth/login", json={"email": f"x{i}@example.com", "password": "wrong"}
        )
    status, _, r = await api.request(
        "POST", "/api/auth/login", json={"email": "fresh@example.com", "password": "wrong"}
    )
    assert status == 429 and "Retry-After" in r.headers


async def test_bad_bodies_get_clear_errors(api: Harness) -> None:
    url = "/api/auth/register"
    status, body, _ = await api.request(
        "POST", url, data=b"{not json", headers={"Content-Type": "application/json"}
    )
    assert status == 400 and body["error"]["message"].startswith("malformed JSON")
    status, body, _ = await api.request(
        "POST", url, data=b"email=a", headers={"Content-Type": "application/x-www-form-urlencoded"}
    )
    assert status == 415
    status, body, _ = await api.request("POST", url, json=["a", "list"])
    assert status == 400 and body["error"]["message"] == "the body must be a JSON object"
    status, body, _ = await api.request("POST", url, json={"email": "a@b.co", "password": "short"})
    assert status == 400 and "password: must be at least 8" in body["error"]["message"]
    status, body, _ = await api.request("POST", url, json={"email": "a@b.co", "password": "x" * 73})
    assert status == 400 and "at most 72" in body["error"]["message"]
    status, body, _ = await api.request(
        "POST", url, json={"email": "a@b.co", "password": "p" * 10, "admin": True}
    )
    assert status == 400 and "admin: is not a known field" in body["error"]["message"]
    status, body, _ = await api.request(
        "POST",
        url,
        data=b'{"email": "' + b"a" * 70_000 + b'"}',
        headers={"Content-Type": "application/json"},
    )
    assert status == 413 and body["error"]["code"] == "payload_too_large"
    await api.register("dupe@example.com")
    status, body, _ = await api.request(
        "POST", url, json={"email": "DUPE@example.com", "password": "another-password"}
    )
    assert status == 409 and body["error"]["code"] == "email_taken"


async def test_expired_revocations_are_purged(api: Harness) -> None:
    from control_api.auth import purge_expired_tokens

    token = await api.register("purge@example.com")
    uid = await api.user_id(token)
    await api.db.execute(
        "INSERT INTO token_blacklist (token_id, user_id, expires_at) VALUES "
        "('old', $1, now() - interval '1 minute'), ('live', $1, now() + interval '1 day')",
        uid,
    )
    assert await purge_expired_tokens(api.db) == 1
    rows = await api.db.fetch("SELECT token_id FROM token_blacklist")
    assert [r["token_id"] for r in rows] == ["live"]
