"""Guards many calls in one process: two and fifty concurrent calls each hear and transcribe
only their own conversation (no cross-talk), and every call's session and tasks are gone
afterwards."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest
import pytest_asyncio

from tests.voice_harness import VoiceRig, call_tasks, voice_rig
from voice_pipeline.server import VoiceConfig
from voice_pipeline.sim.llm import Reply
from voice_pipeline.sim.twilio_media import CallerScript, Utterance


@pytest_asyncio.fixture
async def short_rig(tmp_path: Path, db: asyncpg.Pool, db_dsn: str) -> AsyncIterator[VoiceRig]:
    async for r in voice_rig(tmp_path, db, db_dsn, config=VoiceConfig(idle_timeout_s=30)):
        await db.execute("UPDATE personas SET greeting = 'Hi there!'")
        await db.execute(
            "UPDATE user_credits SET available_credits = 1000, max_call_duration_seconds = 60"
        )
        r.stack.llm.responder = lambda messages, tools: Reply(
            "Heard: " + str(messages[-1]["content"]) + "."
        )
        yield r


@pytest.mark.parametrize("n", [2, 50])
async def test_concurrent_calls_do_not_cross_talk(short_rig: VoiceRig, n: int) -> None:
    words = [f"caller number {i} speaking" for i in range(n)]
    calls = []
    for i in range(n):
        script = CallerScript(
            utterances=[Utterance(words[i], after_silence=0.3)], hang_up_after=0.3, max_seconds=40
        )
        calls.append(await short_rig.call(script, number=f"+1555888{i:04d}"))
    logs = await asyncio.gather(*(short_rig.finish(c, timeout=90) for c in calls))
    assert all(log.errors == [] for log in logs)
    await asyncio.sleep(0.5)
    for i, call in enumerate(calls):
        rows = await short_rig.db.fetch(
            "SELECT speaker, text FROM call_transcripts WHERE call_id = $1 ORDER BY seq", call["id"]
        )
        said = [(s, t) for s, t in rows]
        assert ("caller", words[i]) in said, (i, said)
        assert ("persona", f"Heard: {words[i]}.") in said, (i, said)
        others = [w for j, w in enumerate(words) if j != i]
        assert not any(w in t for _, t in said for w in others if w != words[i])
    assert short_rig.voice.sessions == {}
    await asyncio.sleep(0.2)
    assert call_tasks() == []
