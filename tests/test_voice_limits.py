"""Guards the call's limits end to end: an idle caller is asked if they are still there, then
politely let go; a call reaching its maximum duration says goodbye and is hung up by the server
before Twilio's TimeLimit cuts it."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest_asyncio

from tests.voice_harness import VoiceRig, voice_rig
from voice_pipeline.server import VoiceConfig
from voice_pipeline.sim.twilio_media import CallerScript
from voice_pipeline.turns import TurnConfig


@pytest_asyncio.fixture
async def quick(tmp_path: Path, db: asyncpg.Pool, db_dsn: str) -> AsyncIterator[VoiceRig]:
    async for r in voice_rig(
        tmp_path, db, db_dsn, config=VoiceConfig(idle_timeout_s=1.5, goodbye_margin_s=8)
    ):
        yield r


async def _persona_lines(rig: VoiceRig, call_id: str) -> list[str]:
    await asyncio.sleep(0.3)
    rows = await rig.db.fetch(
        "SELECT text FROM call_transcripts WHERE call_id = $1 AND speaker = 'persona' ORDER BY seq",
        call_id,
    )
    return [r["text"] for r in rows]


async def test_idle_caller_is_prompted_then_let_go(quick: VoiceRig) -> None:
    call = await quick.call(CallerScript(hang_up_after=None, max_seconds=30), number="+15557770301")
    log = await quick.finish(call, timeout=40)
    assert any(kind == "server-closed" for _, kind, _ in log.events)  # we hung up, not the caller
    lines = await _persona_lines(quick, call["id"])
    assert lines[1:] == [TurnConfig.still_there, TurnConfig.idle_goodbye]
    row = await quick.db.fetchrow(
        "SELECT status, finalized_at FROM calls WHERE id = $1", call["id"]
    )
    assert row["status"] == "completed" and row["finalized_at"] is not None


async def test_max_duration_says_goodbye_before_the_time_limit(quick: VoiceRig) -> None:
    await quick.db.execute("UPDATE user_credits SET max_call_duration_seconds = 14")
    started = time.monotonic()
    call = await quick.call(CallerScript(hang_up_after=None, max_seconds=30), number="+15557770302")
    assert quick.stack.twilio.calls[call["twilio_call_sid"]].time_limit == 14
    log = await quick.finish(call, timeout=40)
    assert time.monotonic() - started < 14  # the server ended it, not Twilio's TimeLimit
    assert any(kind == "server-closed" for _, kind, _ in log.events)
    lines = await _persona_lines(quick, call["id"])
    assert lines[-1] == TurnConfig.time_up_goodbye
