"""Guards graceful shutdown and the greeting path: stopping the voice server mid-call lets the
persona say goodbye, flushes the transcript and closes the books; a greeting synthesized at
start-up plays without a TTS round trip."""

from __future__ import annotations

import asyncio

from tests.voice_harness import VoiceRig
from voice_pipeline.server import SHUTDOWN_LINE
from voice_pipeline.sim.latency import Latency
from voice_pipeline.sim.twilio_media import CallerScript, Utterance


async def test_stop_drains_live_calls(rig: VoiceRig) -> None:
    call = await rig.call(
        CallerScript(
            utterances=[Utterance("Tell me about squats")], hang_up_after=None, max_seconds=40
        ),
        number="+15557770501",
    )
    for _ in range(300):  # wait until the reply is playing
        rows = await rig.db.fetch(
            "SELECT 1 FROM call_transcripts WHERE call_id = $1 AND speaker = 'caller'", call["id"]
        )
        if rows:
            break
        await asyncio.sleep(0.05)
    await asyncio.sleep(1.0)
    await rig.voice.stop()
    log = await rig.finish(call)
    assert any(kind == "server-closed" for _, kind, _ in log.events)
    rows = await rig.db.fetch(
        "SELECT speaker, text, interrupted FROM call_transcripts WHERE call_id = $1 ORDER BY seq",
        call["id"],
    )
    assert rows[-1]["text"] == SHUTDOWN_LINE and not rows[-1]["interrupted"]
    assert any(r["interrupted"] for r in rows if r["speaker"] == "persona")  # the cut reply
    row = await rig.db.fetchrow("SELECT status, finalized_at FROM calls WHERE id = $1", call["id"])
    assert row["status"] == "completed" and row["finalized_at"] is not None


async def test_greetings_are_ready_before_the_call(rig: VoiceRig) -> None:
    await asyncio.wait_for(rig.voice._warmup, 10)
    assert len(rig.voice.deps.greeting_cache) == 3
    sockets_before = len(rig.stack.elevenlabs.sockets)
    call = await rig.call(CallerScript(hang_up_after=None, max_seconds=6), number="+15557770502")
    log = await rig.finish(call)
    assert log.heard  # the greeting was heard …
    # … and the call's TTS socket never synthesized it: it came from the cache.
    tts = rig.stack.elevenlabs.sockets[sockets_before:]
    assert all(
        g.text.strip() != "Hey, it's Brad! Good to hear you. How's your day going?"
        for s in tts
        for g in s.generations
    )


async def test_a_cold_greeting_synthesized_by_two_calls_is_cached_once(rig: VoiceRig) -> None:
    await asyncio.wait_for(rig.voice._warmup, 10)
    rig.voice.deps.greeting_cache.clear()  # cold: both calls synthesize the greeting live …
    rig.stack.elevenlabs.latency = Latency(realtime_factor=0.3)  # … at the same time
    script = CallerScript(hang_up_after=None, max_seconds=7)
    calls = await asyncio.gather(
        *(rig.call(script, number=f"+155577705{i:02d}") for i in range(10, 12))
    )
    await asyncio.gather(*(rig.finish(c) for c in calls))
    greeting = "Hey, it's Brad! Good to hear you. How's your day going?"
    assert len(rig.voice.deps.greeting_cache) == 1
    cached = next(iter(rig.voice.deps.greeting_cache.values()))
    audio = b"".join(chunk for chunk, _ in cached)
    # One greeting's audio (65 ms a character, 8 bytes a ms), not two interleaved.
    assert len(audio) == len(greeting + " ") * 65 * 8
    assert sum(chars for _, chars in cached) == len(greeting + " ")
