"""Guards the ElevenLabs stand-in against protocols.md §3: HTTP streaming through the official
SDK (ulaw_8000 length, character-cost, 401/422 bodies), the single-context socket (init rule,
chunk schedule, flush, end of input → isFinal → 1000), the multi-context socket (contextId,
close_context for barge-in, 5-context cap, close_socket) and the inactivity close."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
import websockets
from aiohttp.test_utils import TestServer
from elevenlabs.client import AsyncElevenLabs

from voice_pipeline.sim.elevenlabs import ElevenLabsSim
from voice_pipeline.sim.latency import Latency

KEY = "xi-test-key"
MS_PER_CHAR = 65
ULAW_PER_MS = 8


@pytest_asyncio.fixture
async def el() -> AsyncIterator[tuple[ElevenLabsSim, str]]:
    sim = ElevenLabsSim(api_key=KEY)
    server = TestServer(sim.app, host="127.0.0.1", port=0)
    await server.start_server()
    yield sim, f"127.0.0.1:{server.port}"
    await server.close()


def ws_url(base: str, kind: str, **q: str) -> str:
    query = {"model_id": "eleven_flash_v2_5", "output_format": "ulaw_8000", **q}
    return f"ws://{base}/v1/text-to-speech/VOICE1/{kind}?" + "&".join(
        f"{k}={v}" for k, v in query.items()
    )


async def recv_all(ws: Any, timeout: float = 2.0) -> list[dict[str, Any]]:
    out = []
    try:
        while True:
            out.append(json.loads(await asyncio.wait_for(ws.recv(), timeout)))
    except (TimeoutError, websockets.ConnectionClosed):
        pass
    return out


async def test_http_stream_through_the_official_sdk(el: Any) -> None:
    sim, base = el
    client = AsyncElevenLabs(api_key=KEY, base_url=f"http://{base}")
    text = "Hello there, friend."
    audio = b"".join(
        [
            c
            async for c in client.text_to_speech.stream(
                "VOICE1", text=text, model_id="eleven_flash_v2_5", output_format="ulaw_8000"
            )
        ]
    )
    assert len(audio) == len(text) * MS_PER_CHAR * ULAW_PER_MS
    async with aiohttp.ClientSession() as http:
        url = f"http://{base}/v1/text-to-speech/VOICE1/stream?output_format=pcm_16000"
        async with http.post(
            url, json={"text": text, "model_id": "eleven_flash_v2_5"}, headers={"xi-api-key": KEY}
        ) as r:
            body = await r.read()
            assert r.headers["character-cost"] == "10"  # Flash: 0.5 credit per character
            assert r.headers["request-id"]
            assert len(body) == len(text) * MS_PER_CHAR * 32  # 16 kHz, 16-bit
        async with http.post(url, json={"model_id": "x"}, headers={"xi-api-key": KEY}) as r:
            assert r.status == 422
            assert (await r.json())["detail"][0]["loc"] == ["body", "text"]
        async with http.post(url, json={"text": "x"}) as r:
            assert r.status == 401 and (await r.json())["detail"]["status"] == "invalid_api_key"
    sim.faults.http_status = 429
    with pytest.raises(Exception) as info:
        _ = [c async for c in client.text_to_speech.stream("VOICE1", text="x")]
    assert getattr(info.value, "status_code", None) == 429


async def test_single_context_schedule_flush_and_end_of_input(el: Any) -> None:
    sim, base = el
    async with websockets.connect(
        ws_url(base, "stream-input"), additional_headers={"xi-api-key": KEY}
    ) as ws:
        await ws.send(
            json.dumps({"text": " ", "voice_settings": {"stability": 0.5, "similarity_boost": 0.8}})
        )
        await ws.send(json.dumps({"text": "Short clause, "}))
        assert await recv_all(ws, 0.3) == []  # under the 120-character threshold: no audio yet
        await ws.send(json.dumps({"text": "and the rest. ", "flush": True}))
        msgs = await recv_all(ws, 0.3)
        assert msgs and all(m["isFinal"] is None for m in msgs)
        heard = b"".join(base64.b64decode(m["audio"]) for m in msgs)
        assert len(heard) == len("Short clause, and the rest. ") * MS_PER_CHAR * ULAW_PER_MS
        first = msgs[0]["alignment"]
        assert set(first) == {"chars", "charStartTimesMs", "charDurationsMs"}
        assert first["charStartTimesMs"][0] == 0 and "".join(first["chars"]).startswith("Short")
        await ws.send(json.dumps({"text": "Final words. "}))
        await ws.send(json.dumps({"text": ""}))
        msgs = await recv_all(ws)
    assert msgs[-1] == {"isFinal": True}
    assert ws.close_code == 1000
    assert sim.sockets[0].characters == len("Short clause, and the rest. Final words. ")


async def test_single_context_refuses_a_bad_first_message_and_missing_key(el: Any) -> None:
    _, base = el
    async with websockets.connect(
        ws_url(base, "stream-input"), additional_headers={"xi-api-key": KEY}
    ) as ws:
        await ws.send(json.dumps({"text": "Hello"}))
        msgs = await recv_all(ws)
    assert msgs[0]["code"] == 1008 and ws.close_code == 1008
    async with websockets.connect(ws_url(base, "stream-input")) as ws:
        await ws.send(json.dumps({"text": " "}))
        msgs = await recv_all(ws)
    assert msgs[0]["error"] == "invalid_api_key" and ws.close_code == 1008
    # The key may also come in the first message, in either spelling.
    for field in ("xi_api_key", "xi-api-key"):
        async with websockets.connect(ws_url(base, "stream-input")) as ws:
            await ws.send(json.dumps({"text": " ", field: KEY}))
            await ws.send(json.dumps({"text": "ok then. ", "flush": True}))
            assert await recv_all(ws, 0.3)
    async with websockets.connect(
        ws_url(base, "stream-input", output_format="mp3_44100_128"),
        additional_headers={"xi-api-key": KEY},
    ) as ws:
        msgs = await recv_all(ws)
    assert ws.close_code == 1008


async def test_multi_context_close_and_reuse_without_a_new_handshake(el: Any) -> None:
    sim, base = el
    sim.latency = Latency(realtime_factor=0.1)  # synthesis takes time, as a real engine's does
    flushed = "First part of the answer. "
    async with websockets.connect(
        ws_url(base, "multi-stream-input"), additional_headers={"xi-api-key": KEY}
    ) as ws:
        await ws.send(
            json.dumps({"text": " ", "voice_settings": {"stability": 0.5}, "context_id": "turn-1"})
        )
        await ws.send(json.dumps({"text": flushed, "context_id": "turn-1", "flush": True}))
        await ws.send(json.dumps({"text": "never flushed tail ", "context_id": "turn-1"}))
        first = json.loads(await asyncio.wait_for(ws.recv(), 2))
        assert first["contextId"] == "turn-1" and first["audio"]
        await ws.send(json.dumps({"context_id": "turn-1", "close_context": True}))
        # The next turn starts on the same socket while turn-1's late audio still arrives.
        await ws.send(json.dumps({"text": " ", "context_id": "turn-2"}))
        await ws.send(
            json.dumps({"text": "Sure, go ahead. ", "context_id": "turn-2", "flush": True})
        )
        await ws.send(json.dumps({"context_id": "turn-2", "close_context": True}))
        msgs = await recv_all(ws, 1.0)
        # voice_settings are only allowed in a context's first message.
        await ws.send(json.dumps({"text": "x ", "context_id": "turn-3"}))
        await ws.send(json.dumps({"text": "y ", "context_id": "turn-3", "voice_settings": {}}))
        tail = await recv_all(ws, 1.0)
    old = [m for m in [first, *msgs] if m.get("contextId") == "turn-1"]
    old_audio = sum(len(base64.b64decode(m["audio"])) for m in old if m.get("audio"))
    assert old_audio == len(flushed) * MS_PER_CHAR * ULAW_PER_MS  # flushed text only
    assert old[-1] == {"isFinal": True, "contextId": "turn-1"}
    assert [m.get("isFinal") for m in old].count(True) == 1
    new = [m for m in msgs if m.get("contextId") == "turn-2"]
    new_audio = sum(len(base64.b64decode(m["audio"])) for m in new if m.get("audio"))
    assert new_audio == len("Sure, go ahead. ") * MS_PER_CHAR * ULAW_PER_MS
    assert new[-1] == {"isFinal": True, "contextId": "turn-2"}
    assert tail[-1]["code"] == 1008 and ws.close_code == 1008


async def test_multi_context_cap_and_close_socket(el: Any) -> None:
    _, base = el
    async with websockets.connect(
        ws_url(base, "multi-stream-input"), additional_headers={"xi-api-key": KEY}
    ) as ws:
        for i in range(5):
            await ws.send(json.dumps({"text": " ", "context_id": f"c{i}"}))
        await ws.send(json.dumps({"text": "hi. ", "context_id": "c0"}))
        await ws.send(json.dumps({"close_socket": True}))
        msgs = await recv_all(ws)
    assert ws.close_code == 1000
    assert {m["contextId"] for m in msgs if m.get("isFinal")} == {f"c{i}" for i in range(5)}
    assert any(m.get("audio") for m in msgs)
    async with websockets.connect(
        ws_url(base, "multi-stream-input"), additional_headers={"xi-api-key": KEY}
    ) as ws:
        for i in range(6):
            await ws.send(json.dumps({"text": " ", "context_id": f"c{i}"}))
        msgs = await recv_all(ws)
    assert msgs[-1]["error"] == "max_contexts_exceeded" and ws.close_code == 1008


async def test_inactivity_timeout_closes_with_1008(el: Any) -> None:
    _, base = el
    async with websockets.connect(
        ws_url(base, "multi-stream-input", inactivity_timeout="1"),
        additional_headers={"xi-api-key": KEY},
    ) as ws:
        await ws.send(json.dumps({"text": " ", "context_id": "a"}))
        msgs = await recv_all(ws, 3)
    assert msgs[-1]["error"] == "input_timeout_exceeded" and "1.0 seconds" in msgs[-1]["message"]
    assert ws.close_code == 1008
