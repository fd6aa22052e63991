"""Call records: status transitions and the exactly-once finalization.

Finalization (end time, duration, credits, call_logs row, relationship statistics) runs in one
transaction under the call row's lock and is guarded by ``calls.finalized_at`` and by the
unique index on call deductions, so whichever of ``stop``, socket close and the terminal status
callback arrives first does it, and the others find it done.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

import asyncpg

from voice_pipeline.call_status import FROM_TWILIO, TERMINAL, credits_for, next_status
from voice_pipeline.settings import Rates


class UnknownCall(LookupError):
    pass


class CallSidMismatch(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class StatusResult:
    call_id: str
    status: str
    changed: bool
    finalized: bool


async def apply_twilio_status(
    conn: asyncpg.Connection,
    call_id: str,
    *,
    call_sid: str,
    twilio_status: str,
    sequence: int | None,
    duration_seconds: int | None,
    timestamp: datetime | None = None,
    rates: Rates | None = None,
) -> StatusResult:
    """Apply one Twilio status callback (idempotent, order-independent)."""
    incoming = FROM_TWILIO.get(twilio_status)
    if incoming is None:
        raise ValueError(f"unknown CallStatus {twilio_status!r}")
    async with conn.transaction():
        row = await conn.fetchrow(
            "SELECT id, status, twilio_call_sid, twilio_sequence, finalized_at FROM calls "
            "WHERE id = $1 FOR UPDATE",
            call_id,
        )
        if row is None:
            raise UnknownCall(call_id)
        if row["twilio_call_sid"] and row["twilio_call_sid"] != call_sid:
            raise CallSidMismatch(f"call {call_id} belongs to another CallSid")
        # A failure we recorded without closing the books (no answer from Twilio's REST API) is
        # provisional: Twilio's own word about the call overrules it.
        provisional = row["status"] == "failed" and row["finalized_at"] is None
        new = next_status(row["status"], incoming, provisional=provisional)
        newer = (
            sequence is None or row["twilio_sequence"] is None or sequence > row["twilio_sequence"]
        )
        await conn.execute(
            """
            UPDATE calls SET
                twilio_call_sid = COALESCE(twilio_call_sid, $2),
                status = COALESCE($3, status),
                error_message = CASE WHEN $3 IS NOT NULL AND $3 <> 'failed' THEN NULL
                                     ELSE error_message END,
                twilio_status = CASE WHEN $4 THEN $5 ELSE twilio_status END,
                twilio_sequence = CASE WHEN $4 THEN $6 ELSE twilio_sequence END,
                answered_at = CASE WHEN $5 = 'in-progress'
                                   THEN COALESCE(answered_at, $7::timestamptz, now())
                                   ELSE answered_at END
            WHERE id = $1
            """,
            call_id,
            call_sid,
            new,
            newer,
            twilio_status,
            sequence,
            timestamp,
        )
        finalized = False
        if incoming in TERMINAL:
            finalized = await finalize_call(
                conn,
                call_id,
                status=incoming,
                duration_seconds=duration_seconds or 0,
                rates=rates,
            )
        return StatusResult(call_id, new or row["status"], new is not None, finalized)


async def finalize_call(
    conn: asyncpg.Connection,
    call_id: str,
    *,
    status: str,
    duration_seconds: int,
    error_message: str | None = None,
    rates: Rates | None = None,
) -> bool:
    """Close the call's books once. Returns False if it was already finalized.

    Must run inside a transaction. Credits: one per started minute, never more than the
    balance (the CHECK forbids a negative one; TimeLimit was set from the balance, so a
    shortfall only comes from Twilio rounding and is noted in the transaction).
    """
    assert status in TERMINAL
    call = await conn.fetchrow(
        "SELECT id, user_id, persona_id, phone_number, twilio_call_sid, status, start_time, "
        "answered_at, finalized_at FROM calls WHERE id = $1 FOR UPDATE",
        call_id,
    )
    if call is None:
        raise UnknownCall(call_id)
    if call["finalized_at"] is not None:
        return False
    final_status = (
        status if call["status"] not in TERMINAL or call["status"] == "failed" else call["status"]
    )
    owed = credits_for(duration_seconds) if final_status == "completed" else 0
    charged = 0
    if owed:
        balance = await conn.fetchval(
            "SELECT available_credits FROM user_credits WHERE user_id = $1 FOR UPDATE",
            call["user_id"],
        )
        balance = balance or 0
        charged = min(owed, balance)
        if charged:
            await conn.execute(
                "UPDATE user_credits SET available_credits = available_credits - $2 "
                "WHERE user_id = $1",
                call["user_id"],
                charged,
            )
        note = f"Call {call_id}: {duration_seconds} s, {owed} credit(s)"
        if charged < owed:
            note += f"; {owed - charged} not covered by the balance"
        await conn.execute(
            "INSERT INTO credit_transactions (user_id, amount, type, call_id, description, "
            "balance_before, balance_after) VALUES ($1, $2, 'call_deduction', $3, $4, $5, $6)",
            call["user_id"],
            -charged,
            call_id,
            note,
            balance,
            balance - charged,
        )
    await conn.execute(
        """
        UPDATE calls SET status = $2, finalized_at = now(), end_time = COALESCE(end_time, now()),
            duration_seconds = $3, credits_used = $4,
            payment_method = COALESCE(payment_method, 'credit'),
            payment_status = CASE WHEN $4 > 0 THEN 'credit_used' ELSE payment_status END,
            error_message = COALESCE($5, error_message)
        WHERE id = $1
        """,
        call_id,
        final_status,
        duration_seconds,
        charged,
        error_message,
    )
    log_status = {"completed": "completed"}.get(final_status, "failed")
    await conn.execute(
        """
        INSERT INTO call_logs (call_id, user_id, persona_id, twilio_call_sid, phone_number,
                               duration_seconds, status, error_message, started_at, ended_at)
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8, COALESCE($9::timestamptz, $10::timestamptz), now())
        ON CONFLICT (call_id) DO UPDATE SET duration_seconds = EXCLUDED.duration_seconds,
            status = EXCLUDED.status, ended_at = EXCLUDED.ended_at,
            error_message = COALESCE(EXCLUDED.error_message, call_logs.error_message)
        """,
        call_id,
        call["user_id"],
        call["persona_id"],
        call["twilio_call_sid"],
        call["phone_number"],
        duration_seconds,
        log_status,
        error_message,
        call["answered_at"],
        call["start_time"],
    )
    if final_status == "completed":
        await conn.execute(
            """
            INSERT INTO user_persona_relationships (user_id, persona_id, total_calls,
                                                    total_duration_seconds, last_call_at)
            VALUES ($1, $2, 1, $3, now())
            ON CONFLICT (user_id, persona_id) DO UPDATE SET
                total_calls = user_persona_relationships.total_calls + 1,
                total_duration_seconds = user_persona_relationships.total_duration_seconds + $3,
                last_call_at = now()
            """,
            call["user_id"],
            call["persona_id"],
            duration_seconds,
        )
    if rates is not None and final_status == "completed":
        await charge_missing_minutes(conn, call_id, duration_seconds, rates)
    await upsert_breakdown(conn, call_id)
    return True


async def charge_missing_minutes(
    conn: asyncpg.Connection, call_id: str, duration_seconds: int, rates: Rates
) -> None:
    """Telephony is billed per started minute of Twilio's duration: add any the meter missed
    (a voice process that died mid-call, or a call that never streamed)."""
    due = credits_for(duration_seconds)
    have = await conn.fetchrow(
        "SELECT COALESCE(sum(quantity) FILTER (WHERE provider = 'twilio'), 0)::int AS minutes, "
        "COALESCE(max(seq), -1) AS seq FROM call_cost_events WHERE call_id = $1",
        call_id,
    )
    version = await conn.fetchrow(
        "SELECT v.id, v.rates FROM calls c JOIN cost_rate_versions v ON v.id = c.rate_version_id "
        "WHERE c.id = $1",
        call_id,
    )
    # Old calls keep the rates they ran under.
    per_min = (
        Decimal(version["rates"]["twilio_usd_per_min"]) if version else rates.twilio_usd_per_min
    )
    rate_version = version["id"] if version else None
    cost = int((per_min * 100_000_000).to_integral_value())
    for i in range(due - have["minutes"]):
        await conn.execute(
            "INSERT INTO call_cost_events (call_id, seq, provider, unit, quantity, cost_microcents,"
            " rate_version_id) VALUES ($1, $2, 'twilio', 'minute', 1, $3, $4)",
            call_id,
            have["seq"] + 1 + i,
            cost,
            rate_version,
        )


async def upsert_breakdown(conn: asyncpg.Connection, call_id: str) -> None:
    """The call's breakdown as the exact sum of its cost events (idempotent: re-run whenever
    more events land, e.g. the voice server's last flush after the status callback)."""
    await conn.execute(
        """
        INSERT INTO call_cost_breakdowns AS b (
            call_id, twilio_cost_cents, deepgram_cost_cents, cerebras_cost_cents,
            elevenlabs_cost_cents, twilio_duration_seconds, deepgram_audio_seconds,
            cerebras_input_tokens, cerebras_output_tokens, elevenlabs_characters,
            total_cost_cents, rate_version_id)
        SELECT $1::text,
            COALESCE(sum(cost_microcents) FILTER (WHERE provider = 'twilio'), 0) / 1000000.0,
            COALESCE(sum(cost_microcents) FILTER (WHERE provider = 'deepgram'), 0) / 1000000.0,
            COALESCE(sum(cost_microcents) FILTER (WHERE provider = 'cerebras'), 0) / 1000000.0,
            COALESCE(sum(cost_microcents) FILTER (WHERE provider = 'elevenlabs'), 0) / 1000000.0,
            (SELECT COALESCE(duration_seconds, 0) FROM calls WHERE id = $1::text),
            COALESCE(sum(quantity) FILTER (WHERE unit = 'audio_second'), 0),
            COALESCE(sum(quantity) FILTER (WHERE unit = 'input_token'), 0),
            COALESCE(sum(quantity) FILTER (WHERE unit = 'output_token'), 0),
            COALESCE(sum(quantity) FILTER (WHERE unit = 'character'), 0),
            COALESCE(sum(cost_microcents), 0) / 1000000.0,
            max(rate_version_id)
        FROM call_cost_events WHERE call_id = $1::text
        HAVING count(*) > 0
        ON CONFLICT (call_id) DO UPDATE SET
            twilio_cost_cents = EXCLUDED.twilio_cost_cents,
            deepgram_cost_cents = EXCLUDED.deepgram_cost_cents,
            cerebras_cost_cents = EXCLUDED.cerebras_cost_cents,
            elevenlabs_cost_cents = EXCLUDED.elevenlabs_cost_cents,
            twilio_duration_seconds = EXCLUDED.twilio_duration_seconds,
            deepgram_audio_seconds = EXCLUDED.deepgram_audio_seconds,
            cerebras_input_tokens = EXCLUDED.cerebras_input_tokens,
            cerebras_output_tokens = EXCLUDED.cerebras_output_tokens,
            elevenlabs_characters = EXCLUDED.elevenlabs_characters,
            total_cost_cents = EXCLUDED.total_cost_cents
        """,
        call_id,
    )
    await conn.execute(
        """
        UPDATE calls c SET actual_cost_cents = ceil(b.total_cost_cents)::int
        FROM call_cost_breakdowns b WHERE b.call_id = c.id AND c.id = $1
        """,
        call_id,
    )
    await conn.execute(
        """
        UPDATE call_logs l SET cost_twilio = round(b.twilio_cost_cents)::int,
            cost_stt = round(b.deepgram_cost_cents)::int,
            cost_llm = round(b.cerebras_cost_cents)::int,
            cost_tts = round(b.elevenlabs_cost_cents)::int,
            cost_total = ceil(b.total_cost_cents)::int
        FROM call_cost_breakdowns b WHERE b.call_id = l.call_id AND l.call_id = $1
        """,
        call_id,
    )


async def month_spend_cents(conn: asyncpg.Connection | asyncpg.Pool, user_id: str) -> Decimal:
    """What the user's calls created this month have cost so far (finished breakdowns)."""
    return await conn.fetchval(
        "SELECT COALESCE(sum(b.total_cost_cents), 0) FROM call_cost_breakdowns b "
        "JOIN calls c ON c.id = b.call_id WHERE c.user_id = $1 "
        "AND c.created_at >= date_trunc('month', now())",
        user_id,
    )
