"""Guards call triggering: E.164 and persona checks, credits, calls per day and the monthly
budget checked in one transaction (concurrent triggers never overshoot a limit), and Twilio
failures (error, 5xx, timeout) that fail the call without taking anything."""

from __future__ import annotations

import asyncio
from pathlib import Path

import asyncpg
import pytest

from tests.api_harness import Harness, start_harness, stop_harness

TRIGGER = "/api/calls/trigger"


async def _user(
    api: Harness, email: str, *, credits: int = 10, per_day: int | None = 3, max_seconds: int = 300
) -> tuple[str, str]:
    token = await api.register(email)
    uid = await api.user_id(token)
    await api.db.execute(
        "UPDATE user_credits SET available_credits = $2, max_calls_per_day = $3, "
        "max_call_duration_seconds = $4 WHERE user_id = $1",
        uid,
        credits,
        per_day,
        max_seconds,
    )
    return token, uid


def body(number: str = "+15551234567", persona: str = "brad") -> dict[str, str]:
    return {"persona_id": persona, "phone_number": number}


async def test_bad_numbers_and_personas_are_refused_before_anything_is_written(
    api: Harness,
) -> None:
    token, uid = await _user(api, "v@example.com")
    for number in ("5551234567", "+0123456789", "+1 555 123 4567", "+1555123456789012", ""):
        status, b, _ = await api.request("POST", TRIGGER, token=token, json=body(number))
        assert status == 400 and b["error"]["code"] == "invalid_request", (number, b)
        assert "phone_number" in b["error"]["message"]
    status, b, _ = await api.request("POST", TRIGGER, token=token, json=body(persona="nobody"))
    assert status == 404 and b["error"] == {"code": "not_found", "message": "persona not found"}
    status, b, _ = await api.request("POST", TRIGGER, token=token, json={"persona_id": 7})
    assert status == 400 and b["error"]["details"] == [
        "body.phone_number: is required",
        "body.persona_id: must be string, not integer",
    ]
    assert await api.db.fetchval("SELECT count(*) FROM calls WHERE user_id = $1", uid) == 0


async def test_parallel_triggers_never_exceed_the_daily_limit(api: Harness) -> None:
    token, uid = await _user(api, "burst@example.com", credits=100, per_day=3, max_seconds=60)
    results = await asyncio.gather(
        *(
            api.request("POST", TRIGGER, token=token, json=body(f"+1555000{i:04d}"))
            for i in range(12)
        )
    )
    codes = sorted(status for status, _, _ in results)
    assert codes.count(201) == 3 and codes.count(429) == 9, codes
    limited = next(b for s, b, _ in results if s == 429)
    assert limited["error"]["code"] == "daily_limit_reached"
    assert all(int(r.headers["Retry-After"]) > 0 for s, _, r in results if s == 429)
    assert await api.db.fetchval("SELECT count(*) FROM calls WHERE user_id = $1", uid) == 3


async def test_parallel_triggers_share_the_credit_balance(api: Harness) -> None:
    # 3 credits, 2-minute calls: the first call reserves 2 credits, the second gets the last
    # one (a 60 s TimeLimit), every other concurrent trigger is refused.
    token, uid = await _user(api, "credits@example.com", credits=3, per_day=None, max_seconds=120)
    results = await asyncio.gather(
        *(
            api.request("POST", TRIGGER, token=token, json=body(f"+1555100{i:04d}"))
            for i in range(10)
        )
    )
    ok = [b["call"] for s, b, _ in results if s == 201]
    refused = [b for s, b, _ in results if s != 201]
    assert len(ok) == 2 and {r["error"]["code"] for r in refused} == {"insufficient_credits"}
    assert sorted(c["max_duration_seconds"] for c in ok) == [60, 120]
    limits = sorted(api.sim.calls[c["twilio_call_sid"]].time_limit for c in ok)
    assert limits == [60, 120]
    assert (
        await api.db.fetchval("SELECT available_credits FROM user_credits WHERE user_id = $1", uid)
        == 3
    )


async def test_no_credits_and_exhausted_monthly_budget_are_refused(api: Harness) -> None:
    token, uid = await _user(api, "broke@example.com", credits=0)
    status, b, _ = await api.request("POST", TRIGGER, token=token, json=body())
    assert status == 402 and b["error"]["code"] == "insufficient_credits"

    token, uid = await _user(api, "spender@example.com", credits=50, per_day=None)
    await api.db.execute(
        "UPDATE user_budget_settings SET max_monthly_spend_cents = 100 WHERE user_id = $1", uid
    )
    old = await api.db.fetchval(
        "INSERT INTO calls (user_id, persona_id, phone_number, status, finalized_at) "
        "VALUES ($1, 'brad', '+1555', 'completed', now()) RETURNING id",
        uid,
    )
    await api.db.execute(
        "INSERT INTO call_cost_breakdowns (call_id, twilio_cost_cents, total_cost_cents) "
        "VALUES ($1, 99.5, 99.5)",
        old,
    )
    status, b, _ = await api.request("POST", TRIGGER, token=token, json=body())
    assert status == 402 and b["error"]["code"] == "monthly_budget_exceeded"
    await api.db.execute(
        "UPDATE user_budget_settings SET max_monthly_spend_cents = 10000, "
        "max_cost_per_call_cents = 1 WHERE user_id = $1",
        uid,
    )
    status, b, _ = await api.request("POST", TRIGGER, token=token, json=body())
    assert status == 402 and b["error"]["code"] == "call_budget_too_low"


async def test_running_calls_reserve_monthly_budget(api: Harness) -> None:
    token, uid = await _user(api, "budget@example.com", credits=100, per_day=None, max_seconds=600)
    # Room for a few minutes only: concurrent calls must share it, not each assume all of it.
    await api.db.execute(
        "UPDATE user_budget_settings SET max_monthly_spend_cents = 40 WHERE user_id = $1", uid
    )
    results = await asyncio.gather(
        *(
            api.request("POST", TRIGGER, token=token, json=body(f"+1555200{i:04d}"))
            for i in range(6)
        )
    )
    ok = [b["call"] for s, b, _ in results if s == 201]
    assert ok and len(ok) < 6
    reserved = sum(c["estimated_cost_cents"] for c in ok)
    assert reserved <= 40
    assert {b["error"]["code"] for s, b, _ in results if s != 201} == {"monthly_budget_exceeded"}


@pytest.mark.parametrize(
    ("fault", "twilio_code"),
    [
        ((400, 21211, "The 'To' number +15551234567 is not a valid phone number."), 21211),
        ((500, 20500, "Internal Server Error"), 20500),
        ((401, 20003, "Authenticate"), 20003),
    ],
)
async def test_twilio_errors_fail_the_call_and_take_nothing(
    api: Harness, fault: tuple[int, int, str], twilio_code: int
) -> None:
    token, uid = await _user(api, f"t{twilio_code}@example.com")
    api.sim.faults.create_errors.append(fault)
    status, b, _ = await api.request("POST", TRIGGER, token=token, json=body())
    assert status == 502 and b["error"]["code"] == "twilio_error"
    assert b["error"]["details"]["twilio_code"] == twilio_code
    call = await api.db.fetchrow(
        "SELECT status, error_message, credits_used, finalized_at FROM calls WHERE id = $1",
        b["error"]["details"]["call_id"],
    )
    assert call["status"] == "failed" and str(twilio_code) in call["error_message"]
    assert call["credits_used"] == 0 and call["finalized_at"] is not None
    assert (
        await api.db.fetchval("SELECT available_credits FROM user_credits WHERE user_id = $1", uid)
        == 10
    )
    assert (
        await api.db.fetchval(
            "SELECT count(*) FROM credit_transactions "
            "WHERE user_id = $1 AND type = 'call_deduction'",
            uid,
        )
        == 0
    )
    # A failure Twilio reported does not use up one of the day's calls.
    status, _, _ = await api.request("POST", TRIGGER, token=token, json=body())
    assert status == 201


async def test_twilio_timeout_fails_the_call_provisionally(
    tmp_path: Path, db: asyncpg.Pool, db_dsn: str
) -> None:
    api, parts = await start_harness(tmp_path, db, db_dsn, twilio_timeout=0.3)
    try:
        token, _uid = await _user(api, "slow@example.com")
        api.sim.faults.create_delay = 1.0
        api.sim.callback_delay = 0.6  # Twilio's callbacks come after our client gave up
        status, b, _ = await api.request("POST", TRIGGER, token=token, json=body())
        assert status == 502 and "did not answer within 0.3 s" in b["error"]["message"]
        call_id = b["error"]["details"]["call_id"]
        row = await db.fetchrow("SELECT status, finalized_at FROM calls WHERE id = $1", call_id)
        # Twilio may still have placed it: failed, but not closed; its callbacks will settle it.
        assert row["status"] == "failed" and row["finalized_at"] is None
        # The stand-in did create the call; its answered callback revives the record.
        sim_call = next(iter(api.sim.calls.values()))
        for _ in range(100):
            row = await db.fetchrow(
                "SELECT status, twilio_call_sid FROM calls WHERE id = $1", call_id
            )
            if row["status"] == "in_progress":
                break
            await asyncio.sleep(0.05)
        assert row["status"] == "in_progress", (row, sim_call.callbacks, sim_call.status)
        assert row["twilio_call_sid"] == sim_call.sid
    finally:
        await stop_harness(parts)
