"""Guards the Twilio stand-in's media stream against protocols.md §1.2–1.5: signed upgrade,
connected/start/media/dtmf/mark/stop shapes and one sequence counter, 20 ms real-time cadence,
marks echoed when played (or at once when nothing is buffered), clear dropping audio and echoing
every pending mark, and the record of what the caller heard."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from typing import Any

import websockets
from twilio.request_validator import RequestValidator
from websockets.asyncio.server import ServerConnection, serve

from voice_pipeline.audio import FRAME_BYTES
from voice_pipeline.sim.signals import ScriptBook, decode_number, persona_voice
from voice_pipeline.sim.twilio import SimCall, StreamRequest
from voice_pipeline.sim.twilio_media import CallerScript, MediaStreamCaller, Utterance

TOKEN = "media-token"


def _call() -> SimCall:
    return SimCall(
        sid="CA" + "a" * 32,
        account_sid="AC" + "b" * 32,
        to="+15550001",
        from_="+15550002",
        url=None,
        twiml=None,
        method="POST",
        status_callback=None,
        status_events=[],
        time_limit=60,
        ring_timeout=30,
        machine_detection=None,
    )


async def _serve(handler: Any) -> tuple[Any, str]:
    server = await serve(handler, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    return server, f"ws://127.0.0.1:{port}/stream"


async def test_stream_shapes_sequence_and_cadence() -> None:
    got: list[dict[str, Any]] = []
    headers: dict[str, str] = {}

    async def handler(ws: ServerConnection) -> None:
        headers.update(ws.request.headers)
        async for raw in ws:
            got.append(json.loads(raw))

    server, url = await _serve(handler)
    book = ScriptBook()
    caller = MediaStreamCaller(
        TOKEN,
        book,
        default_script=CallerScript(
            utterances=[Utterance("hello there", after_silence=0.1)],
            dtmf=[(0.3, "5")],
            hang_up_after=0.2,
            wait_for_greeting=False,
            max_seconds=5,
        ),
    )
    call = _call()
    started = time.monotonic()
    await caller(
        call, StreamRequest(url=url, parameters={"call_id": "call_1", "stream_token": "t"})
    )
    server.close()
    elapsed = time.monotonic() - started

    assert RequestValidator(TOKEN).validate(url, {}, headers["x-twilio-signature"])
    assert got[0] == {"event": "connected", "protocol": "Call", "version": "1.0.0"}
    start = got[1]
    assert start["event"] == "start" and start["sequenceNumber"] == "1"
    sid = start["streamSid"]
    assert start["start"]["streamSid"] == sid and start["start"]["callSid"] == call.sid
    assert start["start"]["customParameters"] == {"call_id": "call_1", "stream_token": "t"}
    assert start["start"]["mediaFormat"] == {
        "encoding": "audio/x-mulaw",
        "sampleRate": 8000,
        "channels": 1,
    }
    assert start["start"]["tracks"] == ["inbound"]
    # One counter across every message type after `connected`.
    assert [int(m["sequenceNumber"]) for m in got[1:]] == list(range(1, len(got)))
    media = [m for m in got if m["event"] == "media"]
    assert [m["media"]["chunk"] for m in media] == [str(i) for i in range(1, len(media) + 1)]
    assert all(
        isinstance(m["sequenceNumber"], str) and isinstance(m["media"]["timestamp"], str)
        for m in media
    )
    payloads = [base64.b64decode(m["media"]["payload"]) for m in media]
    assert {len(p) for p in payloads} == {FRAME_BYTES}
    # Real time: 50 frames a second, silence included.
    stamps = [int(m["media"]["timestamp"]) for m in media]
    assert 35 <= len(media) / elapsed <= 55
    assert abs((stamps[-1] - stamps[0]) / (len(stamps) - 1) - 20) < 3
    # The spoken utterance is in the audio, decodable, and the DTMF went out.
    speech = b"".join(payloads[i] for i in range(len(payloads)) if payloads[i] != b"\xff" * 160)
    assert book.text(decode_number(speech)) == "hello there"
    dtmf = [m for m in got if m["event"] == "dtmf"]
    assert dtmf == [
        {
            "event": "dtmf",
            "streamSid": sid,
            "sequenceNumber": dtmf[0]["sequenceNumber"],
            "dtmf": {"track": "inbound_track", "digit": "5"},
        }
    ]
    assert got[-1]["event"] == "stop"
    assert got[-1]["stop"] == {"accountSid": call.account_sid, "callSid": call.sid}


async def test_marks_play_out_at_real_time_and_clear_echoes_pending_marks() -> None:
    t_sent: dict[str, float] = {}
    echoes: list[tuple[float, str]] = []

    async def script(ws: ServerConnection, sid: str) -> None:
        async def send(m: dict[str, Any]) -> None:
            await ws.send(json.dumps({"streamSid": sid, **m}))

        await send({"event": "mark", "mark": {"name": "empty"}})
        t_sent["empty"] = time.monotonic()
        await send(
            {"event": "media", "media": {"payload": base64.b64encode(persona_voice(500)).decode()}}
        )
        await send({"event": "mark", "mark": {"name": "m1"}})
        t_sent["m1"] = time.monotonic()
        more = base64.b64encode(persona_voice(1000)).decode()
        for name in ("m2", "m3"):
            await send({"event": "media", "media": {"payload": more}})
            await send({"event": "mark", "mark": {"name": name}})
        await asyncio.sleep(0.8)
        t_sent["clear"] = time.monotonic()
        await send({"event": "clear"})
        await asyncio.sleep(0.3)
        await ws.close()

    async def handler(ws: ServerConnection) -> None:
        tasks = []
        async for raw in ws:
            msg = json.loads(raw)
            if msg["event"] == "start":
                tasks.append(asyncio.create_task(script(ws, msg["streamSid"])))
            elif msg["event"] == "mark":
                echoes.append((time.monotonic(), msg["mark"]["name"]))
        await asyncio.gather(*tasks)

    server, url = await _serve(handler)
    caller = MediaStreamCaller(
        TOKEN, ScriptBook(), default_script=CallerScript(hang_up_after=None, max_seconds=5)
    )
    call = _call()
    await caller(call, StreamRequest(url=url, parameters={}))
    server.close()
    log = caller.logs[call.sid]
    assert [n for _, n in echoes] == ["empty", "m1", "m2", "m3"]
    at = {n: t for t, n in echoes}
    assert at["empty"] - t_sent["empty"] < 0.1  # nothing buffered: echoed at once
    assert 0.45 <= at["m1"] - t_sent["m1"] <= 0.65  # after its 500 ms played
    assert at["m2"] - t_sent["clear"] < 0.1 and at["m3"] - t_sent["clear"] < 0.1
    assert [c for _, _, c in log.marks_echoed] == [False, False, True, True]
    # Heard: the first 500 ms and ~300 ms of the next second, nothing after the clear.
    heard_ms = len(log.heard_audio()) / 8
    assert 740 <= heard_ms <= 880, heard_ms
    assert log.heard[-1].end_ms <= log.clears[0] + 25
    assert log.close_code == 1000 and log.errors == []


async def test_invalid_server_messages_are_reported_not_fatal() -> None:
    async def handler(ws: ServerConnection) -> None:
        async for raw in ws:
            msg = json.loads(raw)
            if msg["event"] == "start":
                await ws.send("not json")
                await ws.send(
                    json.dumps(
                        {"event": "media", "streamSid": "MZwrong", "media": {"payload": "AA=="}}
                    )
                )
                await ws.send(
                    json.dumps(
                        {
                            "event": "media",
                            "streamSid": msg["streamSid"],
                            "media": {"payload": "!!!"},
                        }
                    )
                )
                await ws.send(b"\x00binary")
                await asyncio.sleep(0.1)
                await ws.close()

    server, url = await _serve(handler)
    caller = MediaStreamCaller(TOKEN, ScriptBook())
    call = _call()
    await caller(call, StreamRequest(url=url, parameters={}))
    server.close()
    errors = caller.logs[call.sid].errors
    assert len(errors) == 4 and all("31951" in e or "binary" in e for e in errors)


async def test_refused_upgrade_is_recorded() -> None:
    async def handler(ws: ServerConnection) -> None:
        await ws.close()

    server = await serve(
        handler, "127.0.0.1", 0, process_request=lambda conn, req: conn.respond(403, "forbidden\n")
    )
    port = server.sockets[0].getsockname()[1]
    caller = MediaStreamCaller(TOKEN, ScriptBook())
    call = _call()
    await caller(call, StreamRequest(url=f"ws://127.0.0.1:{port}/stream", parameters={}))
    server.close()
    assert caller.logs[call.sid].errors and "403" in caller.logs[call.sid].errors[0]
    assert isinstance(websockets.__version__, str)


async def test_a_wav_utterance_is_played_with_its_code(tmp_path: Any) -> None:
    import wave

    import numpy as np

    path = tmp_path / "hello.wav"
    t = np.arange(16000) / 16000  # 1 s at 16 kHz, stereo
    tone = (8000 * np.sin(2 * np.pi * 300 * t)).astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(2)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes(np.repeat(tone, 2).tobytes())
    got: list[bytes] = []

    async def handler(ws: ServerConnection) -> None:
        async for raw in ws:
            msg = json.loads(raw)
            if msg["event"] == "media":
                got.append(base64.b64decode(msg["media"]["payload"]))

    server, url = await _serve(handler)
    book = ScriptBook()
    caller = MediaStreamCaller(
        TOKEN,
        book,
        default_script=CallerScript(
            utterances=[Utterance("recorded hello", wav=path, after_silence=0.05)],
            hang_up_after=0.1,
            wait_for_greeting=False,
            max_seconds=4,
        ),
    )
    await caller(_call(), StreamRequest(url=url, parameters={}))
    server.close()
    speech = b"".join(f for f in got if f != b"\xff" * 160)
    assert book.text(decode_number(speech)) == "recorded hello"
    assert 1100 <= len(speech) / 8 <= 1300  # 160 ms code + 1 s of the recording
