"""Guards the start of the voice-to-voice measure: a turn's speech end is when the caller's last
word ended (the final's word timings, in Deepgram's stream time, mapped to the session clock by
what audio was sent when), not when a slow recognizer got round to its final; and the stream
clock itself maps stream time to sending time, and forgets nothing it still needs."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from tests.voice_harness import VoiceRig, voice_rig
from voice_pipeline.providers.stt import StreamClock
from voice_pipeline.server import VoiceConfig
from voice_pipeline.sim.latency import Latency
from voice_pipeline.sim.stack import Latencies
from voice_pipeline.sim.twilio_media import CallerScript, Utterance

SLOW_STT_MS = 700  # the recognizer's own delay, on top of the endpointing silence


def test_stream_clock_maps_stream_time_to_sending_time() -> None:
    clock = StreamClock()
    for i in range(100):  # 100 frames of 20 ms, sent at 1000 ms + 20 ms each
        clock.sent(0.02, 1000.0 + 20 * i)
    assert clock.when(0.0) == 1000.0
    assert clock.when(0.5) == 1000.0 + 20 * 24  # the frame that carried 0.48-0.50 s
    assert clock.when(1.99) == 1000.0 + 20 * 99
    assert clock.when(5.0) == 1000.0 + 20 * 99  # beyond what was sent: the last send
    assert StreamClock().when(0.3) is None


@pytest.fixture
async def slow_stt_rig(tmp_path: Path, db: asyncpg.Pool, db_dsn: str) -> AsyncIterator[VoiceRig]:
    lat = Latencies(deepgram=Latency(first_ms=SLOW_STT_MS))
    async for rig in voice_rig(
        tmp_path, db, db_dsn, latencies=lat, config=VoiceConfig(idle_timeout_s=30)
    ):
        yield rig


async def test_speech_end_is_where_the_caller_stopped(slow_stt_rig: VoiceRig) -> None:
    script = CallerScript(
        utterances=[Utterance("How long should I rest between sets?")],
        hang_up_after=0.5,
        max_seconds=40,
    )
    call = await slow_stt_rig.call(script)
    log = await slow_stt_rig.finish(call, timeout=60)
    said_end = log.said[0][1]  # ms on the caller's clock (both clocks start at the stream start)
    row = await slow_stt_rig.db.fetchrow(
        "SELECT speech_end_ms, stt_final_ms, voice_to_voice_ms, first_media_ms "
        "FROM call_turn_latencies WHERE call_id = $1 AND speech_end_ms IS NOT NULL",
        call["id"],
    )
    assert row is not None
    assert abs(row["speech_end_ms"] - said_end) <= 100, (dict(row), said_end)
    # The recognizer's delay now shows where it belongs: between speech end and the final.
    assert row["stt_final_ms"] - row["speech_end_ms"] >= 300 + SLOW_STT_MS - 60
    heard = next(h.start_ms for h in log.heard if h.start_ms > said_end)
    # The server's voice-to-voice agrees with the caller's ear within a few frames.
    assert abs(row["voice_to_voice_ms"] - (heard - said_end)) <= 150, (dict(row), heard, said_end)
