"""What the voice server reads and writes for one call: its context at bind time, the
transcript and per-turn latency as they happen, and the metrics at the end."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import asyncpg

from voice_pipeline.costs import whole_cents
from voice_pipeline.db.calls import month_spend_cents


@dataclass(frozen=True)
class CallContext:
    call_id: str
    user_id: str
    persona_id: str
    persona_name: str
    system_prompt: str
    greeting: str | None
    voice_id: str
    voice_settings: dict[str, Any]
    temperature: float
    max_tokens: int
    endpointing_ms: int
    max_duration_seconds: int
    budget_cents: int | None = None
    warn_percent: int = 75
    auto_cutoff: bool = True
    rate_version_id: int | None = None


class BindRefused(Exception):
    """The stream cannot be bound to this call (unknown, finished, or already streaming)."""


async def bind_call(
    pool: asyncpg.Pool,
    call_id: str,
    stream_sid: str,
    call_sid: str,
    rates: dict[str, str] | None = None,
) -> CallContext:
    """Claim the call for this stream (exactly once) and load what the conversation needs.

    The call's budget is fixed here, under the user's credit-row lock (so concurrent calls of
    one user bind one at a time): the per-call cap, or the month's remaining room after the
    spend of finished calls and the budgets of the user's other live calls, whichever is less.
    """
    async with pool.acquire() as conn, conn.transaction():
        row = await conn.fetchrow(
            """
            UPDATE calls SET stream_sid = $2,
                twilio_call_sid = COALESCE(twilio_call_sid, $3),
                status = CASE WHEN status IN ('initiating', 'calling') THEN 'connected'
                              ELSE status END
            WHERE id = $1 AND stream_sid IS NULL AND finalized_at IS NULL
              AND status NOT IN ('completed', 'no_answer', 'busy', 'canceled')
              AND (twilio_call_sid IS NULL OR twilio_call_sid = $3)
            RETURNING id, user_id, persona_id, max_duration_seconds
            """,
            call_id,
            stream_sid,
            call_sid,
        )
        if row is None:
            known = await conn.fetchval("SELECT 1 FROM calls WHERE id = $1", call_id)
            raise BindRefused("call finished or already streaming" if known else "unknown call")
        budget_row = await conn.fetchrow(
            "SELECT b.max_cost_per_call_cents, b.max_monthly_spend_cents, "
            "b.warn_at_percent_per_call, b.enable_auto_cutoff "
            "FROM user_credits c LEFT JOIN user_budget_settings b ON b.user_id = c.user_id "
            "WHERE c.user_id = $1 FOR UPDATE OF c",
            row["user_id"],
        )
        budget = await _call_budget(conn, row["user_id"], call_id, budget_row)
        rate_version = None
        if rates is not None:
            rate_version = await conn.fetchval(
                "INSERT INTO cost_rate_versions (rates) VALUES ($1) ON CONFLICT (rates) "
                "DO UPDATE SET rates = EXCLUDED.rates RETURNING id",
                rates,
            )
        await conn.execute(
            "UPDATE calls SET budget_cents = $2, rate_version_id = $3, "
            "estimated_cost_cents = COALESCE($2, estimated_cost_cents) WHERE id = $1",
            call_id,
            budget,
            rate_version,
        )
        p = await conn.fetchrow(
            "SELECT p.name, p.core_system_prompt, p.greeting, p.default_voice_id, "
            "p.default_voice_settings, p.temperature, p.max_tokens, p.endpointing_ms, "
            "r.relationship_type, r.custom_system_prompt, r.voice_id, r.voice_settings "
            "FROM personas p LEFT JOIN user_persona_relationships r "
            "ON r.persona_id = p.id AND r.user_id = $2 WHERE p.id = $1",
            row["persona_id"],
            row["user_id"],
        )
        limit = await conn.fetchval(
            "SELECT max_call_duration_seconds FROM user_credits WHERE user_id = $1", row["user_id"]
        )
    prompt = p["core_system_prompt"]
    if p["relationship_type"]:
        prompt += f"\n\nThe caller thinks of you as their {p['relationship_type']}."
    if p["custom_system_prompt"]:
        prompt += f"\n\nWhat the caller told you about themselves: {p['custom_system_prompt']}"
    voice_settings = {**(p["default_voice_settings"] or {}), **(p["voice_settings"] or {})}
    voice_settings["speed"] = min(1.2, max(0.7, float(voice_settings.get("speed", 1.0))))
    return CallContext(
        call_id=row["id"],
        user_id=row["user_id"],
        persona_id=row["persona_id"],
        persona_name=p["name"],
        system_prompt=prompt,
        greeting=p["greeting"],
        voice_id=p["voice_id"] or p["default_voice_id"] or "21m00Tcm4TlvDq8ikWAM",
        voice_settings=voice_settings,
        temperature=float(p["temperature"]),
        max_tokens=int(p["max_tokens"]),
        endpointing_ms=int(p["endpointing_ms"]),
        max_duration_seconds=int(row["max_duration_seconds"] or limit or 600),
        budget_cents=budget,
        warn_percent=int(budget_row["warn_at_percent_per_call"] or 75) if budget_row else 75,
        auto_cutoff=budget_row is None or budget_row["enable_auto_cutoff"] is not False,
        rate_version_id=rate_version,
    )


async def _call_budget(
    conn: asyncpg.Connection, user_id: str, call_id: str, b: asyncpg.Record | None
) -> int | None:
    if b is None:
        return None
    caps = [b["max_cost_per_call_cents"]] if b["max_cost_per_call_cents"] is not None else []
    if b["max_monthly_spend_cents"] is not None:
        spent = whole_cents(await month_spend_cents(conn, user_id))
        others = await conn.fetchval(
            "SELECT COALESCE(sum(COALESCE(budget_cents, estimated_cost_cents)), 0)::bigint "
            "FROM calls WHERE user_id = $1 AND id <> $2 AND finalized_at IS NULL "
            "AND status NOT IN ('completed', 'failed', 'no_answer', 'busy', 'canceled')",
            user_id,
            call_id,
        )
        caps.append(max(0, b["max_monthly_spend_cents"] - spent - others))
    return min(caps) if caps else None


async def save_metrics(
    pool: asyncpg.Pool, call_id: str, *, turns: int, interrupts: int, avg_response_ms: int | None
) -> None:
    await pool.execute(
        "UPDATE call_logs SET turn_count = $2, interrupt_count = $3, avg_response_time_ms = $4 "
        "WHERE call_id = $1",
        call_id,
        turns,
        interrupts,
        avg_response_ms,
    )
