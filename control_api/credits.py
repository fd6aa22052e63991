"""Credits, budget settings and the user's own cost analytics (seed 004 §6, §8.2, §13)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import asyncpg
from aiohttp import web

from control_api.auth import require_user
from control_api.schema import BOOLEAN, api, integer, json_body, obj, query_params, string
from control_api.state import DB
from voice_pipeline.db.calls import month_spend_cents

routes = web.RouteTableDef()


def jsonable(row: asyncpg.Record) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in row.items():
        if isinstance(value, Decimal):
            out[key] = str(value)
        elif hasattr(value, "isoformat"):
            out[key] = value.isoformat()
        else:
            out[key] = value
    return out


@routes.get("/api/credits")
@api("Credit balance, tier, limits and the latest credit transactions", tag="credits")
async def credits(request: web.Request) -> web.Response:
    user = await require_user(request)
    pool = request.app[DB]
    row = await pool.fetchrow(
        "SELECT available_credits, subscription_tier, subscription_status, "
        "monthly_credit_allowance, max_calls_per_day, max_call_duration_seconds "
        "FROM user_credits WHERE user_id = $1",
        user.id,
    )
    txns = await pool.fetch(
        "SELECT id, amount, type, call_id, description, balance_before, balance_after, created_at "
        "FROM credit_transactions WHERE user_id = $1 ORDER BY created_at DESC, id LIMIT 50",
        user.id,
    )
    return web.json_response(
        {"credits": jsonable(row) if row else None, "transactions": [jsonable(t) for t in txns]}
    )


BUDGET = obj(
    {
        "max_cost_per_call_cents": integer(0, 10_000_000),
        "max_monthly_spend_cents": integer(0, 100_000_000),
        "warn_at_percent_per_call": integer(1, 100),
        "enable_auto_cutoff": BOOLEAN,
    }
)
BUDGET_FIELDS = (
    "max_cost_per_call_cents",
    "max_monthly_spend_cents",
    "warn_at_percent_per_call",
    "enable_auto_cutoff",
)


@routes.get("/api/budget")
@api("Your per-call and monthly spending limits, and this month's spend", tag="credits")
async def get_budget(request: web.Request) -> web.Response:
    user = await require_user(request)
    return web.json_response(await _budget(request.app[DB], user.id))


async def _budget(pool: asyncpg.Pool, user_id: str) -> dict[str, Any]:
    row = await pool.fetchrow(
        f"SELECT {', '.join(BUDGET_FIELDS)} FROM user_budget_settings WHERE user_id = $1", user_id
    )
    spent = await month_spend_cents(pool, user_id)
    return {"budget": dict(row) if row else None, "month_to_date_cents": str(spent)}


@routes.put("/api/budget")
@api("Change your spending limits", body=BUDGET, tag="credits")
async def put_budget(request: web.Request) -> web.Response:
    user = await require_user(request)
    body = await json_body(request, BUDGET)
    pool = request.app[DB]
    cols = [c for c in BUDGET_FIELDS if c in body]
    await pool.execute(
        f"INSERT INTO user_budget_settings (user_id{''.join(', ' + c for c in cols)}) "
        f"VALUES ($1{''.join(f', ${i + 2}' for i in range(len(cols)))}) "
        f"ON CONFLICT (user_id) DO UPDATE SET "
        f"{', '.join(f'{c} = EXCLUDED.{c}' for c in cols) or 'updated_at = now()'}",
        user.id,
        *[body[c] for c in cols],
    )
    return web.json_response(await _budget(pool, user.id))


ANALYTICS = obj({"group_by": string(enum=["day", "provider", "persona"]), "days": integer(1, 366)})


async def cost_analytics(
    pool: asyncpg.Pool, group_by: str, days: int, user_id: str | None
) -> list[dict[str, Any]]:
    """Seed 004 §13's cost queries, for one user or (admin) everyone."""
    who = "($2::text IS NULL OR c.user_id = $2)"
    since = "c.created_at >= now() - make_interval(days => $1)"
    if group_by == "provider":
        rows = await pool.fetch(
            "SELECT COALESCE(sum(b.twilio_cost_cents), 0) AS twilio, "
            "  COALESCE(sum(b.deepgram_cost_cents), 0) AS deepgram, "
            "  COALESCE(sum(b.cerebras_cost_cents), 0) AS cerebras, "
            "  COALESCE(sum(b.elevenlabs_cost_cents), 0) AS elevenlabs, "
            "  COALESCE(sum(b.total_cost_cents), 0) AS total "
            f"FROM call_cost_breakdowns b JOIN calls c ON c.id = b.call_id WHERE {since} AND {who}",
            days,
            user_id,
        )
        r = rows[0]
        return [
            {"provider": p, "cost_cents": str(r[p])}
            for p in ("twilio", "deepgram", "cerebras", "elevenlabs", "total")
        ]
    if group_by == "persona":
        rows = await pool.fetch(
            "SELECT p.id AS persona_id, p.name AS persona_name, count(c.id) AS calls, "
            "  COALESCE(sum(c.duration_seconds), 0) AS duration_seconds, "
            "  COALESCE(sum(b.total_cost_cents), 0) AS cost_cents "
            "FROM calls c JOIN personas p ON p.id = c.persona_id "
            "LEFT JOIN call_cost_breakdowns b ON b.call_id = c.id "
            f"WHERE {since} AND {who} GROUP BY p.id, p.name ORDER BY calls DESC, p.id",
            days,
            user_id,
        )
    else:
        rows = await pool.fetch(
            "SELECT (c.created_at AT TIME ZONE 'UTC')::date AS day, count(c.id) AS calls, "
            "  count(*) FILTER (WHERE c.status = 'completed') AS completed, "
            "  COALESCE(sum(c.duration_seconds), 0) AS duration_seconds, "
            "  COALESCE(sum(b.total_cost_cents), 0) AS cost_cents "
            "FROM calls c LEFT JOIN call_cost_breakdowns b ON b.call_id = c.id "
            f"WHERE {since} AND {who} GROUP BY 1 ORDER BY 1 DESC",
            days,
            user_id,
        )
    return [jsonable(r) for r in rows]


@routes.get("/api/analytics/costs")
@api("Your costs by day, provider or persona", query=ANALYTICS, tag="credits")
async def analytics(request: web.Request) -> web.Response:
    user = await require_user(request)
    q = query_params(request, ANALYTICS)
    group_by, days = q.get("group_by", "day"), q.get("days", 30)
    rows = await cost_analytics(request.app[DB], group_by, days, user.id)
    return web.json_response({"group_by": group_by, "days": days, "rows": rows})


def setup(app: web.Application) -> None:
    app.router.add_routes(routes)
