"""Guards the schema: seed personas, JSONB defaults, triggers, and the constraints on money,
credits and status columns."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

NEW_CALL = (
    "INSERT INTO calls (user_id, persona_id, phone_number) VALUES ($1, 'brad', '+1') RETURNING id"
)


async def _user(db: asyncpg.Pool, email: str = "a@example.com") -> str:
    return await db.fetchval(
        "INSERT INTO users (email, password_hash) VALUES ($1, 'x') RETURNING id", email
    )


async def test_seed_personas_are_present_with_prompts_and_voices(db: asyncpg.Pool) -> None:
    rows = await db.fetch(
        "SELECT id, name, core_system_prompt, default_voice_id, default_voice_settings, greeting,"
        " is_system_persona FROM personas ORDER BY id"
    )
    assert [r["id"] for r in rows] == ["alex", "brad", "sarah"]
    for r in rows:
        assert r["is_system_persona"] and len(r["core_system_prompt"]) > 200
        assert r["default_voice_id"] and r["greeting"]
        assert set(r["default_voice_settings"]) == {
            "stability",
            "similarity_boost",
            "speed",
            "style",
        }


async def test_jsonb_defaults_apply(db: asyncpg.Pool) -> None:
    uid = await _user(db)
    settings = await db.fetchval(
        "INSERT INTO user_persona_relationships (user_id, persona_id) VALUES ($1, 'brad') "
        "RETURNING voice_settings",
        uid,
    )
    assert settings == {"stability": 0.5, "similarity_boost": 0.75, "speed": 1.0, "style": 0.0}
    # JSONB operators work on it: merge one key, keep the rest.
    merged = await db.fetchval(
        "UPDATE user_persona_relationships SET voice_settings = voice_settings || $2::jsonb "
        "WHERE user_id = $1 RETURNING voice_settings",
        uid,
        {"speed": 1.2},
    )
    assert merged["speed"] == 1.2 and merged["stability"] == 0.5


async def test_updated_at_trigger_fires_on_update(db: asyncpg.Pool) -> None:
    uid = await _user(db)
    before = await db.fetchval("SELECT updated_at FROM users WHERE id = $1", uid)
    await asyncio.sleep(0.01)
    after = await db.fetchval(
        "UPDATE users SET name = 'Ann' WHERE id = $1 RETURNING updated_at", uid
    )
    assert after > before
    created = await db.fetchval("SELECT created_at FROM users WHERE id = $1", uid)
    assert created == before


async def test_negative_credit_balance_is_rejected(db: asyncpg.Pool) -> None:
    uid = await _user(db)
    await db.execute("INSERT INTO user_credits (user_id, available_credits) VALUES ($1, 5)", uid)
    with pytest.raises(asyncpg.CheckViolationError):
        await db.execute(
            "UPDATE user_credits SET available_credits = available_credits - 6 WHERE user_id = $1",
            uid,
        )
    assert (
        await db.fetchval("SELECT available_credits FROM user_credits WHERE user_id = $1", uid) == 5
    )


async def test_unknown_call_status_is_rejected(db: asyncpg.Pool) -> None:
    uid = await _user(db)
    with pytest.raises(asyncpg.CheckViolationError):
        await db.execute(
            "INSERT INTO calls (user_id, persona_id, phone_number, status) "
            "VALUES ($1, 'brad', '+15551234567', 'ringing')",
            uid,
        )
    call_id = await db.fetchval(
        "INSERT INTO calls (user_id, persona_id, phone_number) VALUES ($1, 'brad', '+15551234567') "
        "RETURNING id",
        uid,
    )
    for bad in ("in-progress", "done", ""):
        with pytest.raises(asyncpg.CheckViolationError):
            await db.execute("UPDATE calls SET status = $2 WHERE id = $1", call_id, bad)
    with pytest.raises(asyncpg.CheckViolationError):
        await db.execute(
            "INSERT INTO scheduled_calls (user_id, persona_id, phone_number, scheduled_time,"
            " status)"
            " VALUES ($1, 'brad', '+1555', now(), 'pending')",
            uid,
        )


async def test_money_columns_reject_negatives_and_breakdown_total_must_add_up(
    db: asyncpg.Pool,
) -> None:
    uid = await _user(db)
    call_id = await db.fetchval(
        NEW_CALL,
        uid,
    )
    with pytest.raises(asyncpg.CheckViolationError):
        await db.execute("UPDATE calls SET actual_cost_cents = -1 WHERE id = $1", call_id)
    with pytest.raises(asyncpg.CheckViolationError):
        await db.execute(
            "INSERT INTO call_cost_breakdowns (call_id, twilio_cost_cents, total_cost_cents) "
            "VALUES ($1, 1.5, 2.0)",
            call_id,
        )
    with pytest.raises(asyncpg.CheckViolationError):
        await db.execute(
            "INSERT INTO call_cost_events (call_id, seq, provider, unit, quantity, cost_microcents)"
            " VALUES ($1, 0, 'twilio', 'minute', 1, -5)",
            call_id,
        )
    await db.execute(
        "INSERT INTO call_cost_breakdowns (call_id, twilio_cost_cents, deepgram_cost_cents, "
        "total_cost_cents) VALUES ($1, 1.300000, 0.480000, 1.780000)",
        call_id,
    )


async def test_a_call_can_be_deducted_only_once(db: asyncpg.Pool) -> None:
    uid = await _user(db)
    call_id = await db.fetchval(
        NEW_CALL,
        uid,
    )
    insert = (
        "INSERT INTO credit_transactions (user_id, amount, type, call_id, balance_before, "
        "balance_after) VALUES ($1, -2, 'call_deduction', $2, 10, 8)"
    )
    await db.execute(insert, uid, call_id)
    with pytest.raises(asyncpg.UniqueViolationError):
        await db.execute(insert, uid, call_id)
    with pytest.raises(asyncpg.CheckViolationError):  # before/after must agree with amount
        await db.execute(
            "INSERT INTO credit_transactions (user_id, amount, type, balance_before, balance_after)"
            " VALUES ($1, 5, 'purchase', 10, 12)",
            uid,
        )
