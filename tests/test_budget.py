"""Guards per-call budgets end to end: the persona warns once at the warning threshold, a
budget reached mid-reply stops buying text, says a short goodbye and hangs up, the breakdown
equals the sum of its cost events to the micro-cent, the live meter is visible through the API
while the call runs, and concurrent calls of one user split the month's remaining room."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path

import asyncpg
import pytest_asyncio

from tests.voice_harness import VoiceRig, voice_rig
from voice_pipeline.server import VoiceConfig
from voice_pipeline.session import BUDGET_GOODBYE, BUDGET_WARNING
from voice_pipeline.sim.llm import Reply
from voice_pipeline.sim.twilio_media import CallerScript, Utterance

LONG = (
    "Here is what I think. Start with five minutes of easy cardio to warm up your legs. "
    "Then do three sets of goblet squats, resting a minute between sets. After that, "
    "walking lunges across the room and back, twice. Finish with a slow stretch for your "
    "hips and hamstrings, and drink plenty of water."
)


@pytest_asyncio.fixture
async def pricey(tmp_path: Path, db: asyncpg.Pool, db_dsn: str) -> AsyncIterator[VoiceRig]:
    # Speech at $2 per 1,000 characters (0.2 ¢ a character) makes a budget bite within a turn.
    async for r in voice_rig(
        tmp_path,
        db,
        db_dsn,
        config=VoiceConfig(idle_timeout_s=30),
        RATE_ELEVENLABS_USD_PER_KCHAR="2.0",
    ):
        r.stack.llm.responder = lambda messages, tools: Reply(LONG)
        yield r


async def test_budget_warns_once_then_ends_mid_reply(pricey: VoiceRig) -> None:
    db = pricey.db
    # One minute is estimated at ~103 ¢ at this TTS price, so 110 ¢ is the lowest budget a
    # trigger accepts; each LONG reply costs ~66 ¢: the second one crosses the budget.
    await db.execute(
        "UPDATE user_budget_settings SET max_cost_per_call_cents = 110, "
        "warn_at_percent_per_call = 50"
    )
    script = CallerScript(
        utterances=[Utterance("Plan my workout"), Utterance("And tomorrow?")],
        hang_up_after=None,
        max_seconds=60,
    )
    call = await pricey.call(script, number="+15557770601")
    live_seen = None
    for _ in range(400):
        async with pricey.http.get(
            f"{pricey.settings.public_base_url}/api/calls/{call['id']}",
            headers={"Authorization": f"Bearer {pricey.token}"},
        ) as r:
            body = await r.json()
        if body["live_cost"] and Decimal(body["live_cost"]["cost_cents"]) > 1:
            live_seen = body["live_cost"]
            break
        await asyncio.sleep(0.05)
    assert live_seen is not None and live_seen["budget_cents"] == 110
    assert "twilio" in live_seen["by_provider"]
    log = await pricey.finish(call, timeout=60)
    assert any(kind == "server-closed" for _, kind, _ in log.events)  # we hung up
    await asyncio.sleep(0.3)
    rows = await db.fetch(
        "SELECT speaker, text, interrupted FROM call_transcripts WHERE call_id = $1 ORDER BY seq",
        call["id"],
    )
    persona = [r for r in rows if r["speaker"] == "persona"]
    texts = [r["text"] for r in persona]
    assert texts.count(BUDGET_WARNING) == 1
    assert texts[-1] == BUDGET_GOODBYE
    # The reply that hit the budget was cut off: a strict prefix of LONG, flagged interrupted.
    cut = persona[-2]
    assert cut["interrupted"] and LONG.startswith(cut["text"]) and len(cut["text"]) < len(LONG)
    chars = await db.fetchval(
        "SELECT sum(quantity) FROM call_cost_events WHERE call_id = $1 AND provider = 'elevenlabs'",
        call["id"],
    )
    assert chars < 2 * len(LONG) + len(BUDGET_WARNING) + len(BUDGET_GOODBYE)  # text not bought
    b = await db.fetchrow("SELECT * FROM call_cost_breakdowns WHERE call_id = $1", call["id"])
    events = await db.fetch(
        "SELECT provider, cost_microcents FROM call_cost_events WHERE call_id = $1", call["id"]
    )
    assert b["total_cost_cents"] == Decimal(sum(e["cost_microcents"] for e in events)) / 1_000_000
    for provider in ("twilio", "deepgram", "cerebras", "elevenlabs"):
        assert (
            b[f"{provider}_cost_cents"]
            == Decimal(sum(e["cost_microcents"] for e in events if e["provider"] == provider))
            / 1_000_000
        )
    # Overrun past the budget: at most the goodbye's speech and ~1 s of audio streaming.
    goodbye = Decimal(len(BUDGET_GOODBYE) + 1) * Decimal("0.2")
    assert b["total_cost_cents"] <= 110 + goodbye + Decimal("0.01")
    row = await db.fetchrow(
        "SELECT actual_cost_cents, budget_cents FROM calls WHERE id = $1", call["id"]
    )
    assert row["budget_cents"] == 110 and row["actual_cost_cents"] >= 100
    log_row = await db.fetchrow(
        "SELECT cost_total, cost_tts FROM call_logs WHERE call_id = $1", call["id"]
    )
    assert log_row["cost_total"] >= log_row["cost_tts"] > 0


async def test_concurrent_calls_split_the_monthly_room(pricey: VoiceRig) -> None:
    db = pricey.db
    # Room for 400 ¢ this month; each trigger reserves its estimate (2 min × ~103 ¢, capped by
    # what is left), and each bind turns the reservation into a budget that leaves the other's.
    await db.execute(
        "UPDATE user_budget_settings SET max_cost_per_call_cents = 1000, "
        "max_monthly_spend_cents = 400, warn_at_percent_per_call = 100"
    )
    await db.execute("UPDATE user_credits SET max_call_duration_seconds = 120")
    script = CallerScript(
        utterances=[Utterance("Plan my workout")], hang_up_after=0.3, max_seconds=40
    )
    calls = [await pricey.call(script, number=f"+1555777070{i}") for i in range(2)]
    await asyncio.gather(*(pricey.finish(c, timeout=60) for c in calls))
    await asyncio.sleep(0.3)
    budgets = [
        await db.fetchval("SELECT budget_cents FROM calls WHERE id = $1", c["id"]) for c in calls
    ]
    assert all(b is not None and b >= 100 for b in budgets) and sum(budgets) <= 400
    spent = await db.fetchval(
        "SELECT sum(total_cost_cents) FROM call_cost_breakdowns b JOIN calls c ON c.id = b.call_id "
        "WHERE c.id = ANY($1::text[])",
        [c["id"] for c in calls],
    )
    goodbyes = 2 * Decimal(len(BUDGET_GOODBYE) + 1) * Decimal("0.2")
    assert spent <= 400 + goodbyes + Decimal("0.02")
    # A third call now finds no room for even one minute.
    async with pricey.http.post(
        f"{pricey.settings.public_base_url}/api/calls/trigger",
        json={"persona_id": "brad", "phone_number": "+15557770709"},
        headers={"Authorization": f"Bearer {pricey.token}"},
    ) as r:
        assert r.status in (201, 402)
