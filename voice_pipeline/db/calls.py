"""Call records: status transitions and the exactly-once finalization.

Finalization (end time, duration, credits, call_logs row, relationship statistics) runs in one
transaction under the call row's lock and is guarded by ``calls.finalized_at`` and by the
unique index on call deductions, so whichever of ``stop``, socket close and the terminal status
callback arrives first does it, and the others find it done.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import asyncpg

from voice_pipeline.call_status import FROM_TWILIO, TERMINAL, credits_for, next_status


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
                conn, call_id, status=incoming, duration_seconds=duration_seconds or 0
            )
        return StatusResult(call_id, new or row["status"], new is not None, finalized)


async def finalize_call(
    conn: asyncpg.Connection,
    call_id: str,
    *,
    status: str,
    duration_seconds: int,
    error_message: str | None = None,
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
    return True
