"""Guards scheduled calls: validation, cancel, and firing each due call exactly once even
with several scheduler loops (several API replicas) running at the same moment."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg

from control_api.scheduler import fire_due
from tests.api_harness import Harness, start_harness, stop_harness


def _when(**delta: float) -> str:
    return (datetime.now(UTC) + timedelta(**delta)).isoformat()


async def test_schedule_validation_and_cancel(api: Harness) -> None:
    token = await api.register("sched@example.com")
    base = {"persona_id": "brad", "phone_number": "+15551239999"}
    for when, msg in (
        (_when(hours=-1), "must be in the future"),
        (_when(days=31), "within 30 days"),
        ("tomorrow", "ISO 8601"),
        ("2026-12-01T10:00:00", "time zone"),
    ):
        status, body, _ = await api.request(
            "POST", "/api/calls/schedule", token=token, json={**base, "scheduled_time": when}
        )
        assert status == 400 and msg in body["error"]["message"], (when, body)
    _, body, _ = await api.request(
        "POST",
        "/api/calls/schedule",
        token=token,
        json={**base, "scheduled_time": _when(hours=2)},
        expect=201,
    )
    sid = body["scheduled_call"]["id"]
    assert body["scheduled_call"]["status"] == "scheduled"
    _, body, _ = await api.request("DELETE", f"/api/calls/scheduled/{sid}", token=token, expect=200)
    assert body["scheduled_call"]["status"] == "canceled"
    status, body, _ = await api.request("DELETE", f"/api/calls/scheduled/{sid}", token=token)
    assert status == 409 and body["error"]["code"] == "not_cancelable"
    _, listed, _ = await api.request(
        "GET", "/api/calls/scheduled?status=canceled", token=token, expect=200
    )
    assert [s["id"] for s in listed["scheduled_calls"]] == [sid]


async def test_due_calls_fire_once_with_two_schedulers(
    tmp_path: Path, db: asyncpg.Pool, db_dsn: str
) -> None:
    a, parts_a = await start_harness(tmp_path / "a", db, db_dsn)
    b, parts_b = await start_harness(tmp_path / "b", db, db_dsn)
    try:
        token = await a.register("twice@example.com")
        uid = await a.user_id(token)
        await db.execute(
            "UPDATE user_credits SET available_credits = 100, max_calls_per_day = NULL, "
            "max_call_duration_seconds = 60 WHERE user_id = $1",
            uid,
        )
        ids = [
            await db.fetchval(
                "INSERT INTO scheduled_calls (user_id, persona_id, phone_number, scheduled_time) "
                "VALUES ($1, 'brad', $2, now() - interval '1 second') RETURNING id",
                uid,
                f"+1555300{i:04d}",
            )
            for i in range(6)
        ]
        future = await db.fetchval(
            "INSERT INTO scheduled_calls (user_id, persona_id, phone_number, scheduled_time) "
            "VALUES ($1, 'brad', '+15553009999', now() + interval '1 hour') RETURNING id",
            uid,
        )
        fired = await asyncio.gather(*(fire_due(h.app) for h in (a, b, a, b)))
        assert sum(fired) == 6
        rows = await db.fetch(
            "SELECT id, status, call_id FROM scheduled_calls WHERE id = ANY($1)", ids
        )
        assert {r["status"] for r in rows} == {"executed"}
        assert len({r["call_id"] for r in rows}) == 6
        assert await db.fetchval("SELECT count(*) FROM calls WHERE user_id = $1", uid) == 6
        assert len(a.sim.calls) + len(b.sim.calls) == 6
        assert (
            await db.fetchval("SELECT status FROM scheduled_calls WHERE id = $1", future)
            == "scheduled"
        )
        assert sum(await asyncio.gather(fire_due(a.app), fire_due(b.app))) == 0
    finally:
        await stop_harness(parts_a)
        await stop_harness(parts_b)


async def test_a_due_call_the_user_cannot_afford_fails_with_the_reason(api: Harness) -> None:
    token = await api.register("nocash@example.com")
    uid = await api.user_id(token)
    await api.db.execute("UPDATE user_credits SET available_credits = 0 WHERE user_id = $1", uid)
    sid = await api.db.fetchval(
        "INSERT INTO scheduled_calls (user_id, persona_id, phone_number, scheduled_time) "
        "VALUES ($1, 'sarah', '+15551231234', now()) RETURNING id",
        uid,
    )
    assert await fire_due(api.app) == 1
    row = await api.db.fetchrow(
        "SELECT status, error_message FROM scheduled_calls WHERE id = $1", sid
    )
    assert row["status"] == "failed" and row["error_message"].startswith("insufficient_credits")


async def test_the_loop_runs_inside_the_app(tmp_path: Path, db: asyncpg.Pool, db_dsn: str) -> None:
    h, parts = await start_harness(tmp_path, db, db_dsn, scheduler_interval=0.05)
    try:
        token = await h.register("loop@example.com")
        uid = await h.user_id(token)
        sid = await db.fetchval(
            "INSERT INTO scheduled_calls (user_id, persona_id, phone_number, scheduled_time) "
            "VALUES ($1, 'alex', '+15551231235', now()) RETURNING id",
            uid,
        )
        for _ in range(100):
            if (
                await db.fetchval("SELECT status FROM scheduled_calls WHERE id = $1", sid)
                == "executed"
            ):
                break
            await asyncio.sleep(0.05)
        assert (
            await db.fetchval("SELECT status FROM scheduled_calls WHERE id = $1", sid) == "executed"
        )
    finally:
        await stop_harness(parts)
