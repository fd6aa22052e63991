"""Calls: trigger, history, one call, schedule / list / cancel scheduled calls.

Triggering checks persona, credits, calls per day and the monthly budget in one transaction
that first locks the user's ``user_credits`` row, so concurrent triggers of one user are
serialized and two of them cannot both pass a limit that allows one. Calls already placed but
not yet finalized *reserve* their worst case (credits for their TimeLimit, their estimated
cost), so concurrent calls share the balance and the monthly budget honestly.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import asyncpg
from aiohttp import web

from control_api.auth import require_user
from control_api.errors import ApiError, not_found
from control_api.schema import (
    E164,
    api,
    integer,
    json_body,
    obj,
    parse_datetime,
    query_params,
    string,
)
from control_api.state import DB, METRICS, SETTINGS, TWILIO
from control_api.twilio_rest import TwilioError
from voice_pipeline.call_status import TERMINAL
from voice_pipeline.costs import estimate_cents_per_minute, whole_cents
from voice_pipeline.db.calls import finalize_call, month_spend_cents
from voice_pipeline.logs import get_logger
from voice_pipeline.settings import Settings

log = get_logger("control_api.calls")
routes = web.RouteTableDef()

MAX_SCHEDULE_AHEAD = timedelta(days=30)
# A call not finalized this long after its TimeLimit no longer reserves anything (its voice
# process died and Twilio never reported back); it is surely over.
RESERVATION_GRACE = timedelta(hours=1)

PERSONA_ACCESS = (
    "SELECT id, name FROM personas WHERE id = $1 AND is_active "
    "AND (is_system_persona OR owner_user_id = $2)"
)


@dataclass(frozen=True, slots=True)
class NewCall:
    id: str
    phone_number: str
    time_limit: int
    estimated_cost_cents: int


async def create_call_record(
    conn: asyncpg.Connection, settings: Settings, user_id: str, persona_id: str, phone: str
) -> NewCall:
    """Check every limit and insert the call as ``initiating``, atomically."""
    async with conn.transaction():
        limits = await conn.fetchrow(
            "SELECT c.available_credits, c.max_calls_per_day, c.max_call_duration_seconds, "
            "  b.max_cost_per_call_cents, b.max_monthly_spend_cents, u.is_banned "
            "FROM users u JOIN user_credits c ON c.user_id = u.id "
            "LEFT JOIN user_budget_settings b ON b.user_id = u.id "
            "WHERE u.id = $1 FOR UPDATE OF c",
            user_id,
        )
        if limits is None:
            raise ApiError(402, "insufficient_credits", "no credit account for this user")
        if limits["is_banned"]:
            raise ApiError(403, "account_banned", "this account is banned")
        if await conn.fetchrow(PERSONA_ACCESS, persona_id, user_id) is None:
            raise not_found("persona")

        open_calls = await conn.fetchrow(
            "SELECT COALESCE(sum(ceil(max_duration_seconds / 60.0)), 0)::int AS credits, "
            "  COALESCE(sum(estimated_cost_cents), 0)::bigint AS cents "
            "FROM calls WHERE user_id = $1 AND finalized_at IS NULL "
            "  AND status NOT IN ('completed', 'failed', 'no_answer', 'busy', 'canceled') "
            "  AND created_at > now() - make_interval(secs => max_duration_seconds) - $2::interval",
            user_id,
            RESERVATION_GRACE,
        )
        free_credits = limits["available_credits"] - open_calls["credits"]
        if free_credits < 1:
            raise ApiError(
                402,
                "insufficient_credits",
                "not enough credits for a call (1 credit = 1 minute)"
                + (" while your other calls are running" if open_calls["credits"] else ""),
            )
        per_day = limits["max_calls_per_day"]
        if per_day is not None:
            today = await conn.fetchval(
                "SELECT count(*) FROM calls WHERE user_id = $1 "
                "AND created_at >= date_trunc('day', now()) "
                "AND NOT (status = 'failed' AND twilio_call_sid IS NULL)",
                user_id,
            )
            if today >= per_day:
                midnight = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
                wait = int((midnight + timedelta(days=1) - datetime.now(UTC)).total_seconds()) + 1
                raise ApiError(
                    429,
                    "daily_limit_reached",
                    f"you have used your {per_day} calls for today",
                    headers={"Retry-After": str(wait)},
                )

        per_minute = estimate_cents_per_minute(settings.rates)
        min_call = whole_cents(per_minute)
        per_call_cap = limits["max_cost_per_call_cents"]
        if per_call_cap is not None and per_call_cap < min_call:
            raise ApiError(
                402,
                "call_budget_too_low",
                f"your per-call budget ({per_call_cap} ¢) is below the cost of one minute "
                f"(about {min_call} ¢)",
            )
        monthly_cap = limits["max_monthly_spend_cents"]
        if monthly_cap is not None:
            committed = whole_cents(await month_spend_cents(conn, user_id)) + open_calls["cents"]
            if committed + min_call > monthly_cap:
                raise ApiError(
                    402,
                    "monthly_budget_exceeded",
                    f"this month's spend ({committed} ¢ incl. running calls) leaves less than one "
                    f"minute within your monthly budget of {monthly_cap} ¢",
                )
            remaining = monthly_cap - committed
        else:
            remaining = None

        time_limit = min(limits["max_call_duration_seconds"], free_credits * 60)
        # The estimate is the call's worst case: its TimeLimit at the typical rate, capped by
        # the per-call budget and the monthly room left (the voice server enforces both).
        estimate = whole_cents(per_minute * time_limit / 60)
        for cap in (per_call_cap, remaining):
            if cap is not None:
                estimate = min(estimate, cap)
        call_id = await conn.fetchval(
            "INSERT INTO calls (user_id, persona_id, phone_number, status, payment_method, "
            "  payment_status, estimated_cost_cents, max_duration_seconds) "
            "VALUES ($1, $2, $3, 'initiating', 'credit', 'pending', $4, $5) RETURNING id",
            user_id,
            persona_id,
            phone,
            estimate,
            time_limit,
        )
    return NewCall(call_id, phone, time_limit, estimate)


async def place_call(app: web.Application, call: NewCall) -> dict[str, Any]:
    """Create the Twilio call for a record; mark it ``calling`` or ``failed``."""
    settings = app[SETTINGS]
    pool = app[DB]
    try:
        created = await app[TWILIO].create_call(
            to=call.phone_number,
            url=f"{settings.twiml_url}?call_id={call.id}",
            status_callback=f"{settings.status_callback_url}?call_id={call.id}",
            time_limit=call.time_limit,
        )
    except TwilioError as err:
        message = f"Twilio: {err}" + (f" (code {err.code})" if err.code else "")
        async with pool.acquire() as conn, conn.transaction():
            # Only a definite refusal closes the books; after a timeout Twilio may still have
            # placed the call, and its status callbacks will settle it.
            await conn.execute(
                "UPDATE calls SET status = 'failed', error_message = $2, payment_status = NULL "
                "WHERE id = $1 AND status = 'initiating'",
                call.id,
                message,
            )
            if err.status is not None:
                await finalize_call(
                    conn, call.id, status="failed", duration_seconds=0, error_message=message
                )
        app[METRICS].calls_triggered.inc("twilio_error")
        log.warning("twilio_create_failed", call_id=call.id, code=err.code, status=err.status)
        raise ApiError(
            502, "twilio_error", message, details={"call_id": call.id, "twilio_code": err.code}
        ) from err
    await pool.execute(
        "UPDATE calls SET twilio_call_sid = COALESCE(twilio_call_sid, $2), "
        "status = CASE WHEN status IN ('initiating', 'failed') THEN 'calling' ELSE status END, "
        "error_message = CASE WHEN status = 'failed' THEN NULL ELSE error_message END "
        "WHERE id = $1",
        call.id,
        created.sid,
    )
    app[METRICS].calls_triggered.inc("placed")
    log.info("call_placed", call_id=call.id, call_sid=created.sid, time_limit=call.time_limit)
    return await call_json(pool, call.id)


async def call_json(pool: asyncpg.Pool, call_id: str) -> dict[str, Any]:
    row = await pool.fetchrow(CALL_SELECT + " WHERE c.id = $1", call_id)
    assert row is not None
    return _call(row)


CALL_SELECT = (
    "SELECT c.id, c.persona_id, p.name AS persona_name, p.avatar_url, c.phone_number, c.status, "
    "  c.twilio_call_sid, c.estimated_cost_cents, c.actual_cost_cents, c.credits_used, "
    "  c.max_duration_seconds, c.start_time, c.answered_at, c.end_time, c.duration_seconds, "
    "  c.error_message, c.created_at "
    "FROM calls c JOIN personas p ON p.id = c.persona_id"
)


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def _call(row: asyncpg.Record) -> dict[str, Any]:
    return {
        "id": row["id"],
        "persona_id": row["persona_id"],
        "persona_name": row["persona_name"],
        "avatar_url": row["avatar_url"],
        "phone_number": row["phone_number"],
        "status": row["status"],
        "twilio_call_sid": row["twilio_call_sid"],
        "estimated_cost_cents": row["estimated_cost_cents"],
        "actual_cost_cents": row["actual_cost_cents"],
        "credits_used": row["credits_used"],
        "max_duration_seconds": row["max_duration_seconds"],
        "start_time": _iso(row["start_time"]),
        "answered_at": _iso(row["answered_at"]),
        "end_time": _iso(row["end_time"]),
        "duration_seconds": row["duration_seconds"],
        "error_message": row["error_message"],
        "created_at": _iso(row["created_at"]),
        "is_live": row["status"] not in TERMINAL,
    }


TRIGGER = obj(
    {
        "persona_id": string(min_len=1, max_len=100),
        "phone_number": string(pattern=E164, max_len=16),
    },
    ("persona_id", "phone_number"),
)


@routes.post("/api/calls/trigger")
@api("Place a call now", body=TRIGGER, status=201, tag="calls")
async def trigger(request: web.Request) -> web.Response:
    user = await require_user(request)
    body = await json_body(request, TRIGGER)
    async with request.app[DB].acquire() as conn:
        try:
            call = await create_call_record(
                conn, request.app[SETTINGS], user.id, body["persona_id"], body["phone_number"]
            )
        except ApiError as err:
            request.app[METRICS].calls_triggered.inc(err.code)
            raise
    return web.json_response({"call": await place_call(request.app, call)}, status=201)


HISTORY = obj({"limit": integer(1, 100), "offset": integer(0, 1_000_000)})


@routes.get("/api/calls/history")
@api("The user's calls, newest first, with persona names", query=HISTORY, tag="calls")
async def history(request: web.Request) -> web.Response:
    user = await require_user(request)
    q = query_params(request, HISTORY)
    limit, offset = q.get("limit", 20), q.get("offset", 0)
    pool = request.app[DB]
    rows = await pool.fetch(
        CALL_SELECT + " WHERE c.user_id = $1 ORDER BY c.created_at DESC, c.id LIMIT $2 OFFSET $3",
        user.id,
        limit,
        offset,
    )
    total = await pool.fetchval("SELECT count(*) FROM calls WHERE user_id = $1", user.id)
    return web.json_response(
        {"calls": [_call(r) for r in rows], "total": total, "limit": limit, "offset": offset}
    )


SCHEDULED_QUERY = obj(
    {"status": string(enum=["scheduled", "executing", "executed", "failed", "canceled"])}
)


@routes.get("/api/calls/scheduled")
@api("The user's scheduled calls", query=SCHEDULED_QUERY, tag="calls")
async def list_scheduled(request: web.Request) -> web.Response:
    user = await require_user(request)
    q = query_params(request, SCHEDULED_QUERY)
    rows = await request.app[DB].fetch(
        SCHEDULED_SELECT + " WHERE s.user_id = $1 AND ($2::text IS NULL OR s.status = $2) "
        "ORDER BY s.scheduled_time",
        user.id,
        q.get("status"),
    )
    return web.json_response({"scheduled_calls": [_scheduled(r) for r in rows]})


@routes.get(r"/api/calls/{call_id}")
@api("One call with its transcript, per-turn latency and cost breakdown", tag="calls")
async def get_call(request: web.Request) -> web.Response:
    user = await require_user(request)
    pool = request.app[DB]
    call_id = request.match_info["call_id"]
    row = await pool.fetchrow(CALL_SELECT + " WHERE c.id = $1 AND c.user_id = $2", call_id, user.id)
    if row is None:
        raise not_found("call")  # another user's call is indistinguishable from none
    transcript = await pool.fetch(
        "SELECT seq, turn_id, speaker, text, start_ms, end_ms, interrupted FROM call_transcripts "
        "WHERE call_id = $1 ORDER BY seq",
        call_id,
    )
    latency = await pool.fetch(
        "SELECT turn_id, speech_end_ms, stt_final_ms, llm_first_token_ms, tts_first_byte_ms, "
        "first_media_ms, voice_to_voice_ms, interrupted FROM call_turn_latencies "
        "WHERE call_id = $1 ORDER BY turn_id",
        call_id,
    )
    cost = await pool.fetchrow(
        "SELECT twilio_cost_cents, deepgram_cost_cents, cerebras_cost_cents, elevenlabs_cost_cents,"
        " total_cost_cents, twilio_duration_seconds, deepgram_audio_seconds, cerebras_input_tokens,"
        " cerebras_output_tokens, elevenlabs_characters "
        "FROM call_cost_breakdowns WHERE call_id = $1",
        call_id,
    )
    live = None
    if row["status"] not in TERMINAL:
        sums = await pool.fetch(
            "SELECT provider, sum(cost_microcents)::bigint AS micro FROM call_cost_events "
            "WHERE call_id = $1 GROUP BY provider",
            call_id,
        )
        budget = await pool.fetchval("SELECT budget_cents FROM calls WHERE id = $1", call_id)
        by = {r["provider"]: str(Decimal(r["micro"]) / 1_000_000) for r in sums}
        total = sum((r["micro"] for r in sums), 0)
        live = {
            "cost_cents": str(Decimal(total) / 1_000_000),
            "by_provider": by,
            "budget_cents": budget,
        }
    return web.json_response(
        {
            "call": _call(row),
            "live_cost": live,
            "transcript": [dict(r) for r in transcript],
            "latency": [dict(r) for r in latency],
            "cost_breakdown": {k: str(v) if hasattr(v, "as_tuple") else v for k, v in cost.items()}
            if cost
            else None,
        }
    )


SCHEDULE = obj(
    {
        "persona_id": string(min_len=1, max_len=100),
        "phone_number": string(pattern=E164, max_len=16),
        "scheduled_time": string(fmt="date-time", max_len=40),
    },
    ("persona_id", "phone_number", "scheduled_time"),
)

SCHEDULED_SELECT = (
    "SELECT s.id, s.persona_id, p.name AS persona_name, s.phone_number, s.scheduled_time, "
    "  s.status, s.executed_at, s.call_id, s.error_message, s.created_at "
    "FROM scheduled_calls s JOIN personas p ON p.id = s.persona_id"
)


def _scheduled(row: asyncpg.Record) -> dict[str, Any]:
    return {
        "id": row["id"],
        "persona_id": row["persona_id"],
        "persona_name": row["persona_name"],
        "phone_number": row["phone_number"],
        "scheduled_time": _iso(row["scheduled_time"]),
        "status": row["status"],
        "executed_at": _iso(row["executed_at"]),
        "call_id": row["call_id"],
        "error_message": row["error_message"],
        "created_at": _iso(row["created_at"]),
    }


@routes.post("/api/calls/schedule")
@api("Schedule a call for later (up to 30 days ahead)", body=SCHEDULE, status=201, tag="calls")
async def schedule(request: web.Request) -> web.Response:
    user = await require_user(request)
    body = await json_body(request, SCHEDULE)
    when = parse_datetime(body["scheduled_time"])
    now = datetime.now(UTC)
    if when < now - timedelta(minutes=1):
        raise ApiError(400, "invalid_request", "body.scheduled_time: must be in the future")
    if when > now + MAX_SCHEDULE_AHEAD:
        raise ApiError(400, "invalid_request", "body.scheduled_time: must be within 30 days")
    pool = request.app[DB]
    if await pool.fetchrow(PERSONA_ACCESS, body["persona_id"], user.id) is None:
        raise not_found("persona")
    sid = await pool.fetchval(
        "INSERT INTO scheduled_calls (user_id, persona_id, phone_number, scheduled_time) "
        "VALUES ($1, $2, $3, $4) RETURNING id",
        user.id,
        body["persona_id"],
        body["phone_number"],
        when,
    )
    row = await pool.fetchrow(SCHEDULED_SELECT + " WHERE s.id = $1", sid)
    return web.json_response({"scheduled_call": _scheduled(row)}, status=201)


@routes.delete(r"/api/calls/scheduled/{scheduled_id}")
@api("Cancel a scheduled call that has not fired yet", tag="calls")
async def cancel_scheduled(request: web.Request) -> web.Response:
    user = await require_user(request)
    pool = request.app[DB]
    sid = request.match_info["scheduled_id"]
    async with pool.acquire() as conn, conn.transaction():
        status = await conn.fetchval(
            "SELECT status FROM scheduled_calls WHERE id = $1 AND user_id = $2 FOR UPDATE",
            sid,
            user.id,
        )
        if status is None:
            raise not_found("scheduled call")
        if status != "scheduled":
            raise ApiError(409, "not_cancelable", f"this scheduled call is already {status}")
        await conn.execute("UPDATE scheduled_calls SET status = 'canceled' WHERE id = $1", sid)
    row = await pool.fetchrow(SCHEDULED_SELECT + " WHERE s.id = $1", sid)
    return web.json_response({"scheduled_call": _scheduled(row)})


def setup(app: web.Application) -> None:
    app.router.add_routes(routes)
