"""The scheduled-call loop (seed 004 §7.2), safe with any number of API replicas.

Each tick claims due rows with ``SELECT … FOR UPDATE SKIP LOCKED`` and moves them to
``executing`` in the same transaction, so a row is claimed by exactly one loop; the call is
then triggered like ``POST /api/calls/trigger`` (same limits) and the row becomes ``executed``
(with ``call_id``) or ``failed`` (with the reason). A row left ``executing`` by a process that
died mid-fire is failed after ``STUCK_AFTER`` rather than fired twice.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import timedelta

from aiohttp import web

from control_api.calls import create_call_record, place_call
from control_api.errors import ApiError
from control_api.state import DB, METRICS, SETTINGS
from voice_pipeline.logs import get_logger

log = get_logger("control_api.scheduler")

BATCH = 10
STUCK_AFTER = timedelta(minutes=5)

SCHEDULER_INTERVAL = web.AppKey("scheduler_interval", float)


async def fire_due(app: web.Application) -> int:
    """One tick: fire every due scheduled call this loop can claim. Returns how many."""
    pool = app[DB]
    async with pool.acquire() as conn:
        await conn.execute(
            "UPDATE scheduled_calls SET status = 'failed', "
            "error_message = 'the scheduler stopped while firing this call' "
            "WHERE status = 'executing' AND updated_at < now() - $1::interval",
            STUCK_AFTER,
        )
        async with conn.transaction():
            due = await conn.fetch(
                "SELECT id, user_id, persona_id, phone_number FROM scheduled_calls "
                "WHERE status = 'scheduled' AND scheduled_time <= now() "
                "ORDER BY scheduled_time LIMIT $1 FOR UPDATE SKIP LOCKED",
                BATCH,
            )
            if due:
                await conn.execute(
                    "UPDATE scheduled_calls SET status = 'executing' WHERE id = ANY($1::text[])",
                    [r["id"] for r in due],
                )
    for row in due:
        await _fire(app, row["id"], row["user_id"], row["persona_id"], row["phone_number"])
    return len(due)


async def _fire(app: web.Application, sid: str, user_id: str, persona_id: str, phone: str) -> None:
    pool = app[DB]
    call_id = None
    try:
        async with pool.acquire() as conn:
            call = await create_call_record(conn, app[SETTINGS], user_id, persona_id, phone)
        call_id = call.id
        await pool.execute("UPDATE scheduled_calls SET call_id = $2 WHERE id = $1", sid, call_id)
        await place_call(app, call)
    except ApiError as err:
        await pool.execute(
            "UPDATE scheduled_calls SET status = 'failed', executed_at = now(), "
            "error_message = $2, call_id = COALESCE(call_id, $3) WHERE id = $1",
            sid,
            f"{err.code}: {err.message}",
            call_id,
        )
        app[METRICS].scheduler_fired.inc("failed")
        log.warning("scheduled_call_failed", scheduled_id=sid, code=err.code)
        return
    await pool.execute(
        "UPDATE scheduled_calls SET status = 'executed', executed_at = now() WHERE id = $1", sid
    )
    app[METRICS].scheduler_fired.inc("executed")
    log.info("scheduled_call_fired", scheduled_id=sid, call_id=call_id)


async def run(app: web.Application, interval: float) -> None:
    while True:
        try:
            await fire_due(app)
        except asyncio.CancelledError:
            raise
        except Exception:  # a bad tick (database blip) must not kill the loop
            log.exception("scheduler_tick_failed")
        await asyncio.sleep(interval)


async def scheduler_ctx(app: web.Application) -> AsyncIterator[None]:
    interval = app.get(SCHEDULER_INTERVAL, 5.0)
    task = asyncio.create_task(run(app, interval), name="scheduler") if interval > 0 else None
    yield
    if task:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
