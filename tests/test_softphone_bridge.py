"""Guards the softphone's path without a browser (the Chromium test needs the engines): the
control API serves the page with a strict CSP and tells it where the Twilio stand-in's handset
bridge is (and that there is none with real Twilio); a page on the bridge is rung for its
number, its microphone frames become the Media Stream the voice server hears, the persona's
audio comes back to it, and hanging up from the page ends the call. Only the newest page owns
a number; a malformed number is refused."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import aiohttp
import asyncpg
from aiohttp.test_utils import TestClient, TestServer

from control_api.app import create_app
from tests.conftest import make_settings
from tests.voice_harness import VoiceRig
from voice_pipeline.audio import FRAME_BYTES, split_frames
from voice_pipeline.sim.signals import encode_utterance

NUMBER = "+15550201234"


async def next_text(ws: aiohttp.ClientWebSocketResponse, kind: str, timeout: float) -> dict:
    """The next text message of ``kind``, counting the audio bytes that pass meanwhile."""
    deadline = time.monotonic() + timeout
    while True:
        msg = await ws.receive(timeout=max(0.01, deadline - time.monotonic()))
        if msg.type == aiohttp.WSMsgType.TEXT:
            data = msg.json()
            if data["type"] == kind:
                return data
        elif msg.type != aiohttp.WSMsgType.BINARY:
            raise AssertionError(f"socket ended before {kind!r}: {msg.type}")


async def audio_for(ws: aiohttp.ClientWebSocketResponse, seconds: float) -> bytes:
    got = bytearray()
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        try:
            msg = await ws.receive(timeout=left)
        except TimeoutError:
            break
        if msg.type == aiohttp.WSMsgType.BINARY:
            got += msg.data
    return bytes(got)


async def audio_until_quiet(
    ws: aiohttp.ClientWebSocketResponse, quiet: float, limit: float
) -> bytes:
    """Audio until none has come for ``quiet`` seconds (after some came), or ``limit``."""
    got = bytearray()
    deadline = time.monotonic() + limit
    while (left := deadline - time.monotonic()) > 0:
        try:
            msg = await ws.receive(timeout=min(left, quiet) if got else left)
        except TimeoutError:
            if got:
                break
            continue
        if msg.type == aiohttp.WSMsgType.BINARY:
            got += msg.data
    return bytes(got)


async def test_page_and_config_are_served(rig: VoiceRig) -> None:
    base = rig.settings.public_base_url
    async with rig.http.get(f"{base}/phone") as r:
        assert r.status == 200 and r.content_type == "text/html"
        csp = r.headers["Content-Security-Policy"]
        assert "default-src 'self'" in csp and "frame-ancestors 'none'" in csp
        assert "/phone/app.js" in await r.text()
    async with rig.http.get(f"{base}/phone/worklet.js") as r:
        assert r.status == 200 and "registerProcessor" in await r.text()
    async with rig.http.get(f"{base}/phone/config") as r:
        bridge = (await r.json())["bridge"]
    twilio = rig.settings.twilio_api_base.replace("http://", "ws://")
    assert bridge == f"{twilio}/_sim/phone"
    assert twilio.split("/")[2] in csp  # the page may connect to the bridge, nowhere else


async def test_no_softphone_with_real_twilio(tmp_path: Path, db: asyncpg.Pool, db_dsn: str) -> None:
    settings = make_settings(tmp_path, db_dsn, TWILIO_API_BASE="https://api.twilio.com")
    app = create_app(settings, pool=db, scheduler_interval=0)
    async with TestClient(TestServer(app)) as client:
        r = await client.get("/phone/config")
        assert r.status == 404
        assert (await r.json())["error"]["code"] == "softphone_unavailable"


async def test_a_call_through_the_handset_bridge(rig: VoiceRig) -> None:
    bridge = rig.settings.twilio_api_base.replace("http://", "ws://") + "/_sim/phone"
    for bad in ("12345", "%2B1", "%2B1555abc0000"):
        async with rig.http.get(bridge.replace("ws://", "http://") + f"?to={bad}") as r:
            assert r.status == 400  # not an E.164 number: refused before the upgrade

    old = await rig.http.ws_connect(f"{bridge}?to=%2B15550201234")
    assert (await next_text(old, "ready", 5))["to"] == NUMBER
    async with rig.http.ws_connect(f"{bridge}?to=%2B15550201234") as ws:
        closed = await old.receive(timeout=5)
        assert closed.type == aiohttp.WSMsgType.CLOSE and closed.data == 4000  # replaced
        await next_text(ws, "ready", 5)
        async with rig.http.post(
            f"{rig.settings.public_base_url}/api/calls/trigger",
            json={"persona_id": "brad", "phone_number": NUMBER},
            headers={"Authorization": f"Bearer {rig.token}"},
        ) as r:
            call = (await r.json())["call"]
        connected = await next_text(ws, "connected", 10)
        assert connected["call_sid"] == call["twilio_call_sid"]
        greeting = await audio_until_quiet(ws, quiet=0.6, limit=15)
        assert len(greeting) > FRAME_BYTES * 10  # the greeting reached the page's earpiece

        # The "microphone": a scripted utterance, sent at real time like the page's worklet.
        text = "What should I eat before a run"
        speech = encode_utterance(rig.stack.book.register(text), text)
        due = time.monotonic()
        for frame in split_frames(speech + b"\xff" * 8000):
            await ws.send_bytes(frame)
            due += 0.02  # on a fixed schedule, as an audio clock would (no drift)
            await asyncio.sleep(max(0.0, due - time.monotonic()))
        reply = await audio_for(ws, 4.0)
        assert len(reply) > FRAME_BYTES * 10
        await ws.send_json({"type": "hangup"})
        ended = await next_text(ws, "ended", 10)
        assert ended["call_sid"] == call["twilio_call_sid"]
    await old.close()
    sim_call = await rig.stack.twilio.wait_ended(call["twilio_call_sid"], 15)
    if sim_call.stream_task is not None:
        await sim_call.stream_task
    for _ in range(100):  # the voice session writes its last rows as it ends
        if call["id"] not in rig.voice.sessions:
            break
        await asyncio.sleep(0.05)
    rows = await rig.db.fetch(
        "SELECT speaker, text FROM call_transcripts WHERE call_id = $1 ORDER BY seq", call["id"]
    )
    assert [r["text"] for r in rows if r["speaker"] == "caller"] == [text]
    assert sum(r["speaker"] != "caller" for r in rows) >= 2  # greeting and the answer
    log = rig.stack.caller.logs[sim_call.sid]
    assert any(kind == "stop" for _, kind, _ in log.events)  # the page hung up: stop, then close
    assert not rig.stack.caller.handsets  # the page left: the number is free again
