"""Admin routes (seed 003 §3.8), behind the admin token, never a user's JWT."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from control_api.auth import require_admin
from control_api.credits import cost_analytics, jsonable
from control_api.errors import ApiError, not_found
from control_api.personas import (
    CREATE_PERSONA,
    PERSONA_FIELDS,
    UPDATE_PERSONA,
    insert_persona,
    persona_json,
    update_persona_row,
)
from control_api.schema import api, integer, json_body, obj, query_params, string
from control_api.state import DB
from voice_pipeline.logs import get_logger

log = get_logger("control_api.admin")
routes = web.RouteTableDef()

PAGE = obj({"limit": integer(1, 200), "offset": integer(0, 10_000_000), "q": string(max_len=255)})


@routes.get("/admin/users")
@api("Users with balances (search by email with q)", auth="admin", query=PAGE, tag="admin")
async def users(request: web.Request) -> web.Response:
    await require_admin(request)
    q = query_params(request, PAGE)
    rows = await request.app[DB].fetch(
        "SELECT u.id, u.email, u.name, u.phone, u.is_banned, u.ban_reason, u.created_at, "
        "  c.available_credits, c.subscription_tier, "
        "  (SELECT count(*) FROM calls WHERE user_id = u.id) AS total_calls "
        "FROM users u LEFT JOIN user_credits c ON c.user_id = u.id "
        "WHERE ($3::text IS NULL OR u.email LIKE '%' || $3 || '%') "
        "ORDER BY u.created_at DESC, u.id LIMIT $1 OFFSET $2",
        q.get("limit", 50),
        q.get("offset", 0),
        (q.get("q") or "").lower() or None,
    )
    return web.json_response({"users": [jsonable(r) for r in rows]})


BAN = obj({"reason": string(max_len=1000)})


async def _set_ban(request: web.Request, banned: bool) -> web.Response:
    admin = await require_admin(request)
    user_id = request.match_info["user_id"]
    reason = None
    if banned and request.can_read_body:
        reason = (await json_body(request, BAN)).get("reason")
    pool = request.app[DB]
    async with pool.acquire() as conn, conn.transaction():
        row = await conn.fetchrow(
            "UPDATE users SET is_banned = $2, banned_at = CASE WHEN $2 THEN now() END, "
            "ban_reason = $3 WHERE id = $1 RETURNING id, email, is_banned, ban_reason",
            user_id,
            banned,
            reason,
        )
        if row is None:
            raise not_found("user")
        # No token revocation needed: every request re-checks is_banned (auth.current_user).
    log.info("user_ban_changed", admin=admin, user_id=user_id, banned=banned)
    return web.json_response({"user": dict(row)})


@routes.post(r"/admin/users/{user_id}/ban")
@api("Ban a user: every request with their tokens is refused", auth="admin", body=BAN, tag="admin")
async def ban(request: web.Request) -> web.Response:
    return await _set_ban(request, True)


@routes.post(r"/admin/users/{user_id}/unban")
@api("Lift a ban", auth="admin", tag="admin")
async def unban(request: web.Request) -> web.Response:
    return await _set_ban(request, False)


ADJUST = obj(
    {"amount": integer(-1_000_000, 1_000_000), "description": string(min_len=1, max_len=500)},
    ("amount", "description"),
)


@routes.post(r"/admin/users/{user_id}/credits")
@api("Add or remove credits (recorded as admin_adjustment)", auth="admin", body=ADJUST, tag="admin")
async def adjust_credits(request: web.Request) -> web.Response:
    admin = await require_admin(request)
    body = await json_body(request, ADJUST)
    user_id = request.match_info["user_id"]
    async with request.app[DB].acquire() as conn, conn.transaction():
        balance = await conn.fetchval(
            "SELECT available_credits FROM user_credits WHERE user_id = $1 FOR UPDATE", user_id
        )
        if balance is None:
            raise not_found("user")
        after = balance + body["amount"]
        if after < 0:
            raise ApiError(409, "insufficient_credits", f"balance is {balance}; cannot go below 0")
        await conn.execute(
            "UPDATE user_credits SET available_credits = $2 WHERE user_id = $1", user_id, after
        )
        await conn.execute(
            "INSERT INTO credit_transactions (user_id, amount, type, description, balance_before,"
            " balance_after) VALUES ($1, $2, 'admin_adjustment', $3, $4, $5)",
            user_id,
            body["amount"],
            f"{body['description']} (by {admin})",
            balance,
            after,
        )
    return web.json_response(
        {"user_id": user_id, "balance_before": balance, "balance_after": after}
    )


@routes.get("/admin/personas")
@api("Every persona, active or not, system or custom", auth="admin", tag="admin")
async def admin_personas(request: web.Request) -> web.Response:
    await require_admin(request)
    rows = await request.app[DB].fetch(
        f"SELECT {PERSONA_FIELDS} FROM personas ORDER BY created_at, id"
    )
    return web.json_response({"personas": [persona_json(r) for r in rows]})


@routes.post("/admin/personas")
@api("Create a system persona", auth="admin", body=CREATE_PERSONA, status=201, tag="admin")
async def admin_create_persona(request: web.Request) -> web.Response:
    await require_admin(request)
    body = await json_body(request, CREATE_PERSONA)
    row = await insert_persona(request.app[DB], body, owner=None, system=True)
    return web.json_response({"persona": persona_json(row)}, status=201)


ADMIN_UPDATE = obj({**UPDATE_PERSONA["properties"], "is_active": {"type": "boolean"}})


@routes.put(r"/admin/personas/{persona_id}")
@api("Change any persona", auth="admin", body=ADMIN_UPDATE, tag="admin")
async def admin_update_persona(request: web.Request) -> web.Response:
    await require_admin(request)
    body = await json_body(request, ADMIN_UPDATE)
    row = await update_persona_row(request.app[DB], request.match_info["persona_id"], body, "true")
    if row is None:
        raise not_found("persona")
    return web.json_response({"persona": persona_json(row)})


@routes.delete(r"/admin/personas/{persona_id}")
@api("Deactivate any persona", auth="admin", status=204, tag="admin")
async def admin_delete_persona(request: web.Request) -> web.Response:
    await require_admin(request)
    done = await request.app[DB].execute(
        "UPDATE personas SET is_active = false WHERE id = $1", request.match_info["persona_id"]
    )
    if done.endswith(" 0"):
        raise not_found("persona")
    return web.Response(status=204)


DAYS = obj({"days": integer(1, 366)})


@routes.get("/admin/analytics/calls")
@api("Call volume and outcomes per day", auth="admin", query=DAYS, tag="admin")
async def analytics_calls(request: web.Request) -> web.Response:
    await require_admin(request)
    days = query_params(request, DAYS).get("days", 30)
    rows = await cost_analytics(request.app[DB], "day", days, None)
    top = await request.app[DB].fetch(
        "SELECT p.name, count(c.id) AS call_count, COALESCE(sum(c.duration_seconds), 0) AS "
        "total_duration FROM calls c JOIN personas p ON c.persona_id = p.id "
        "WHERE c.created_at >= now() - make_interval(days => $1) AND c.status = 'completed' "
        "GROUP BY p.id, p.name ORDER BY call_count DESC LIMIT 10",
        days,
    )
    return web.json_response({"days": days, "by_day": rows, "top_personas": [dict(r) for r in top]})


@routes.get("/admin/analytics/revenue")
@api("Credits consumed by calls per day", auth="admin", query=DAYS, tag="admin")
async def analytics_revenue(request: web.Request) -> web.Response:
    await require_admin(request)
    days = query_params(request, DAYS).get("days", 30)
    rows = await request.app[DB].fetch(
        "SELECT (created_at AT TIME ZONE 'UTC')::date AS day, -sum(amount) AS credits_used, "
        "count(*) AS calls FROM credit_transactions WHERE type = 'call_deduction' "
        "AND created_at >= now() - make_interval(days => $1) GROUP BY 1 ORDER BY 1 DESC",
        days,
    )
    return web.json_response({"days": days, "rows": [jsonable(r) for r in rows]})


@routes.get("/admin/analytics/costs")
@api("Provider costs for everyone, by provider", auth="admin", query=DAYS, tag="admin")
async def analytics_costs(request: web.Request) -> web.Response:
    await require_admin(request)
    days = query_params(request, DAYS).get("days", 30)
    rows: list[dict[str, Any]] = await cost_analytics(request.app[DB], "provider", days, None)
    return web.json_response({"days": days, "rows": rows})


def setup(app: web.Application) -> None:
    app.router.add_routes(routes)
