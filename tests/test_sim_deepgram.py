"""Guards the Deepgram stand-in against protocols.md §2 with the official deepgram-sdk:
auth and query validation on the upgrade, Results (interim/final/speech_final) with words and
stream-time offsets, SpeechStarted, UtteranceEnd, Finalize, CloseStream → Metadata → 1000,
the 10 s inactivity close (NET-0001), empty/undecodable audio (DATA-0000) and the faults."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio
import websockets
from aiohttp.test_utils import TestServer
from deepgram import AsyncDeepgramClient
from deepgram.core.api_error import ApiError
from deepgram.environment import DeepgramClientEnvironment

from voice_pipeline.audio import SILENCE_FRAME, split_frames
from voice_pipeline.sim.deepgram import DeepgramSim
from voice_pipeline.sim.latency import Latency
from voice_pipeline.sim.signals import encode_utterance

KEY = "dg-test-key"
OPTS: dict[str, Any] = dict(
    model="nova-3",
    encoding="mulaw",
    sample_rate=8000,
    channels=1,
    interim_results="true",
    endpointing=300,
    utterance_end_ms=1000,
    vad_events="true",
    punctuate="true",
)


@pytest_asyncio.fixture
async def dg() -> AsyncIterator[tuple[DeepgramSim, AsyncDeepgramClient, str]]:
    sim = DeepgramSim(api_key=KEY)
    server = TestServer(sim.app, host="127.0.0.1", port=0)
    await server.start_server()
    base = f"127.0.0.1:{server.port}"
    env = DeepgramClientEnvironment(
        base=f"http://{base}",
        production=f"ws://{base}",
        agent=f"ws://{base}",
        agent_rest=f"http://{base}",
    )
    yield sim, AsyncDeepgramClient(api_key=KEY, environment=env), base
    await server.close()


def speech(sim: DeepgramSim, text: str) -> list[bytes]:
    return split_frames(encode_utterance(sim.book.register(text), text))


async def drain(conn: Any, timeout: float = 2.0) -> list[Any]:
    out = []
    try:
        while True:
            out.append(await asyncio.wait_for(conn.recv(), timeout))
    except (TimeoutError, websockets.ConnectionClosed):
        pass
    return out


async def test_a_spoken_turn_yields_interims_final_and_utterance_end(dg: Any) -> None:
    sim, client, _ = dg
    async with client.listen.v1.connect(**OPTS) as conn:
        for frame in (
            [SILENCE_FRAME] * 25
            + speech(sim, "Book a table for two, please.")
            + [SILENCE_FRAME] * 70
        ):
            await conn.send_media(frame)
        await conn.send_close_stream()
        msgs = await drain(conn)
    kinds = [type(m).__name__ for m in msgs]
    assert kinds[0] == "ListenV1SpeechStarted" and abs(msgs[0].timestamp - 0.5) < 0.03
    results = [m for m in msgs if type(m).__name__ == "ListenV1Results"]
    interims = [r for r in results if not r.is_final]
    finals = [r for r in results if r.is_final and r.channel.alternatives[0].transcript]
    assert len(interims) >= 3
    # Interim transcripts grow word by word towards the final.
    texts = [r.channel.alternatives[0].transcript for r in interims]
    assert all(texts[i + 1].startswith(texts[i]) for i in range(len(texts) - 1) if texts[i])
    assert len(finals) == 1 and finals[0].speech_final is True
    final = finals[0]
    assert final.channel.alternatives[0].transcript == "Book a table for two, please."
    words = final.channel.alternatives[0].words
    assert [w.word for w in words] == ["book", "a", "table", "for", "two", "please"]
    assert words[-1].punctuated_word == "please." and abs(final.start - 0.5) < 0.03
    assert kinds.index("ListenV1UtteranceEnd") > kinds.index("ListenV1Results")
    ue = next(m for m in msgs if type(m).__name__ == "ListenV1UtteranceEnd")
    assert abs(ue.last_word_end - words[-1].end) < 0.05
    meta = msgs[-1]
    assert type(meta).__name__ == "ListenV1Metadata" and meta.channels == 1
    frames = 25 + len(speech(sim, "Book a table for two, please.")) + 70
    assert abs(meta.duration - frames * 0.02) < 0.05
    assert sim.sessions[0].closed_with == (1000, "")


async def test_finalize_flushes_with_from_finalize(dg: Any) -> None:
    sim, client, _ = dg
    async with client.listen.v1.connect(**OPTS) as conn:
        for frame in speech(sim, "Cancel my appointment"):
            await conn.send_media(frame)
        await conn.send_finalize()
        msgs = await drain(conn, 0.5)
    finals = [m for m in msgs if getattr(m, "is_final", False)]
    assert len(finals) == 1 and finals[0].from_finalize is True and finals[0].speech_final is False
    assert finals[0].channel.alternatives[0].transcript == "Cancel my appointment"


async def test_without_interim_results_or_vad_events_only_finals_arrive(dg: Any) -> None:
    sim, client, _ = dg
    opts = {
        k: v
        for k, v in OPTS.items()
        if k not in ("interim_results", "utterance_end_ms", "vad_events")
    }
    async with client.listen.v1.connect(**opts) as conn:
        for frame in speech(sim, "just finals") + [SILENCE_FRAME] * 30:
            await conn.send_media(frame)
        await conn.send_close_stream()
        msgs = await drain(conn)
    assert [type(m).__name__ for m in msgs] == ["ListenV1Results", "ListenV1Metadata"]


async def test_bad_credentials_and_parameters_are_refused_on_upgrade(dg: Any) -> None:
    _, _, base = dg
    env = DeepgramClientEnvironment(
        base=f"http://{base}",
        production=f"ws://{base}",
        agent=f"ws://{base}",
        agent_rest=f"http://{base}",
    )
    with pytest.raises(ApiError) as info:
        async with AsyncDeepgramClient(api_key="wrong", environment=env).listen.v1.connect(**OPTS):
            pass
    assert info.value.status_code == 401
    for query in (
        "encoding=mulaw&sample_rate=8000&interim_results=True",  # SDK 5–7.1 bug
        "encoding=mulaw",  # sample_rate missing
        "encoding=mulaw&sample_rate=8000&utterance_end_ms=1000",  # needs interim_results
        "encoding=wav&sample_rate=8000",
        "endpointing=soon",
    ):
        with pytest.raises(websockets.InvalidStatus) as bad:
            async with websockets.connect(
                f"ws://{base}/v1/listen?{query}",
                additional_headers={"Authorization": f"Token {KEY}"},
            ):
                pass
        assert bad.value.response.status_code == 400, query
        assert bad.value.response.headers["dg-error"]
        assert bad.value.response.headers["dg-request-id"]


async def test_inactivity_and_bad_audio_close_with_deepgram_codes(dg: Any) -> None:
    sim, _, base = dg
    sim.timeout = 0.3
    hdr = {"Authorization": f"Token {KEY}"}
    url = f"ws://{base}/v1/listen?encoding=mulaw&sample_rate=8000"
    async with websockets.connect(url, additional_headers=hdr) as ws:
        # KeepAlive before any audio does not keep the socket open.
        await ws.send('{"type": "KeepAlive"}')
        with pytest.raises(websockets.ConnectionClosed):
            await asyncio.wait_for(ws.recv(), 2)
    assert (ws.close_code, ws.close_reason) == (1011, "NET-0001")
    async with websockets.connect(url, additional_headers=hdr) as ws:
        await ws.send(SILENCE_FRAME)
        t0 = time.monotonic()
        for _ in range(4):  # KeepAlive after audio does extend the window
            await asyncio.sleep(0.2)
            await ws.send('{"type": "KeepAlive"}')
        with pytest.raises(websockets.ConnectionClosed):
            while True:
                await asyncio.wait_for(ws.recv(), 2)
    assert time.monotonic() - t0 > 0.9 and ws.close_code == 1011
    async with websockets.connect(url, additional_headers=hdr) as ws:
        await ws.send(b"")
        with pytest.raises(websockets.ConnectionClosed):
            await asyncio.wait_for(ws.recv(), 2)
    assert (ws.close_code, ws.close_reason) == (1008, "DATA-0000")
    async with websockets.connect(url.replace("mulaw", "opus"), additional_headers=hdr) as ws:
        await ws.send(b"\x01\x02")
        with pytest.raises(websockets.ConnectionClosed):
            await asyncio.wait_for(ws.recv(), 2)
    assert ws.close_code == 1008


async def test_faults_and_latency_knobs(dg: Any) -> None:
    sim, client, _ = dg
    sim.faults.upgrade_status = 503
    with pytest.raises(ApiError) as info:
        async with client.listen.v1.connect(**OPTS):
            pass
    assert info.value.status_code == 503
    sim.faults.upgrade_status = None
    sim.faults.drop_after_s = 0.2
    async with client.listen.v1.connect(**OPTS) as conn:
        with pytest.raises(websockets.ConnectionClosed) as dropped:
            for frame in [SILENCE_FRAME] * 100:
                await conn.send_media(frame)
                await asyncio.sleep(0.01)
    assert dropped.value.rcvd is None  # no close frame: the connection just died
    sim.faults.drop_after_s = None
    sim.latency = Latency(first_ms=250)
    async with client.listen.v1.connect(**OPTS) as conn:
        frames = speech(sim, "slow result") + [SILENCE_FRAME] * 20
        for frame in frames:
            await conn.send_media(frame)
        sent = time.monotonic()
        while True:
            msg = await asyncio.wait_for(conn.recv(), 2)
            if getattr(msg, "is_final", False) and msg.channel.alternatives[0].transcript:
                break
        arrived = time.monotonic()
    assert msg.channel.alternatives[0].transcript == "slow result"
    assert arrived - sent >= 0.25  # the configured time-to-result held the final back
