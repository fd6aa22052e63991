"""The Twilio stand-in's media stream: a scripted caller on a real WebSocket.

Plays Twilio's side of protocols.md §1.2–1.5 as a client of the server under test:

- opens the socket with ``x-twilio-signature`` computed over the ``<Stream url>`` exactly as
  written in the TwiML (no parameters);
- sends ``connected`` (no sequenceNumber, no streamSid), ``start`` (sequenceNumber "1", the
  ``<Parameter>``s in ``customParameters``), then one inbound ``media`` frame of 160 μ-law bytes
  every 20 ms of wall time — silence included — with string ``sequenceNumber``/``chunk``/
  ``timestamp``; ``dtmf`` when scripted; ``stop`` then close(1000) when the caller hangs up;
- plays the server's ``media`` at real time (8,000 bytes/s) from a buffer, echoes each ``mark``
  when playback reaches it (at once if nothing is buffered), and on ``clear`` drops the buffer
  and echoes every pending mark at once; every echo takes the next sequence number;
- records what the caller actually heard (bytes and times) and every event, for tests and the
  benchmark.

The caller is scripted (:class:`CallerScript`): utterances spoken when the persona has been
quiet for a while, or barging in a given time into the persona's speech; DTMF digits; hang-up.
Or it is a person: a :class:`Handset` (the browser softphone, ``GET /_sim/phone``) registered
for the called number lends its microphone and earpiece to the stream, so the pipeline sees
exactly the frames Twilio would send. The handset's socket (not part of Twilio's API): binary
frames of 160 μ-law bytes each way (microphone in, earpiece out, at the pace the earpiece plays
them); text frames ``{"type": "hangup"}`` from the page and ``ready``/``connected``/``clear``/
``ended`` to it.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import secrets
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import websockets
from aiohttp import WSMsgType, web
from twilio.request_validator import RequestValidator
from websockets.asyncio.client import ClientConnection

from voice_pipeline.audio import FRAME_BYTES, SILENCE_FRAME, split_frames, wav_to_ulaw
from voice_pipeline.sim.signals import CODE_MS, ScriptBook, encode_utterance
from voice_pipeline.sim.twilio import SimCall, StreamRequest

FRAME_S = 0.02


@dataclass
class Utterance:
    text: str
    # Real recorded speech to play instead of the synthetic voice (any WAV); the utterance code
    # is still put in front so the scripted recognizer knows the text.
    wav: Path | None = None
    # Speak once the persona has been silent this long (seconds) …
    after_silence: float = 0.6
    # … or, if set, barge in this long after the persona *started* its current audio.
    barge_in_after: float | None = None
    # Real speech (8 kHz μ-law, e.g. from Piper) sent as it is, without the utterance code:
    # for a real recognizer (local engines), which needs no help to know the words.
    ulaw: bytes | None = None


@dataclass
class CallerScript:
    utterances: list[Utterance] = field(default_factory=list)
    dtmf: list[tuple[float, str]] = field(default_factory=list)  # (seconds after start, digit)
    # Hang up this long after the last utterance's reply has finished playing (None: never;
    # a reply that never comes is bounded by max_seconds).
    hang_up_after: float | None = 1.5
    max_seconds: float = 120.0
    # Wait for the persona's greeting to finish before the first utterance.
    wait_for_greeting: bool = True
    # Fault injection: raw text frames sent as they are at (seconds after start, frame).
    raw: list[tuple[float, str]] = field(default_factory=list)


@dataclass
class Heard:
    """One stretch of persona audio the caller heard: [start_ms, end_ms) and the bytes."""

    start_ms: float
    end_ms: float
    audio: bytearray = field(default_factory=bytearray)


@dataclass
class StreamLog:
    stream_sid: str
    call_sid: str
    events: list[tuple[float, str, Any]] = field(default_factory=list)  # (ms, kind, detail)
    heard: list[Heard] = field(default_factory=list)
    said: list[tuple[float, float, str]] = field(default_factory=list)  # (start_ms, end_ms, text)
    marks_echoed: list[tuple[float, str, bool]] = field(default_factory=list)  # (ms, name, cleared)
    media_received: list[tuple[float, int]] = field(default_factory=list)  # (ms, bytes)
    clears: list[float] = field(default_factory=list)
    close_code: int | None = None
    close_reason: str = ""
    errors: list[str] = field(default_factory=list)

    def heard_audio(self) -> bytes:
        return b"".join(bytes(h.audio) for h in self.heard)


MIC_BUFFER_FRAMES = 10  # 200 ms: a handset that sends faster than real time loses the oldest
MIC_PRIME_FRAMES = 3  # 60 ms of jitter buffer, refilled after each underrun


class Handset:
    """A person's phone for the stand-in: the softphone page on a WebSocket."""

    def __init__(self, ws: web.WebSocketResponse, number: str) -> None:
        self.ws = ws
        self.number = number
        self.mic: deque[bytes] = deque(maxlen=MIC_BUFFER_FRAMES)
        self.hung_up = asyncio.Event()
        self.in_call = False
        self._partial = b""
        self._priming = True

    def next_frame(self) -> bytes:
        """20 ms for the Media Stream. A jitter buffer: the page's frames arrive with network
        and timer jitter, so play from 60 ms behind and, after running dry, wait for 60 ms
        again; one silent frame in the middle of a word is what a caller would hear as a click."""
        if self._priming and len(self.mic) < MIC_PRIME_FRAMES:
            return SILENCE_FRAME
        self._priming = False
        frame = self.mic.popleft()
        self._priming = not self.mic
        return frame

    def heard(self, data: bytes) -> None:
        """Microphone audio from the page: re-cut into 20 ms frames."""
        data = self._partial + data
        self.mic.extend(split_frames(data, pad=False))
        self._partial = data[len(data) - len(data) % FRAME_BYTES :]

    async def notify(self, kind: str, **fields: Any) -> None:
        if not self.ws.closed:
            with contextlib.suppress(ConnectionError):
                await self.ws.send_json({"type": kind, **fields})

    async def play(self, audio: bytes) -> None:
        if not self.ws.closed:
            with contextlib.suppress(ConnectionError):
                await self.ws.send_bytes(audio)


class MediaStreamCaller:
    """``TwilioSim.on_stream`` implementation: one scripted caller (or handset) per stream."""

    def __init__(
        self,
        auth_token: str,
        book: ScriptBook,
        *,
        scripts: dict[str, CallerScript] | None = None,
        default_script: CallerScript | None = None,
        connect_timeout: float = 10.0,
    ) -> None:
        self.validator = RequestValidator(auth_token)
        self.book = book
        self.scripts = scripts or {}
        self.default_script = default_script or CallerScript(hang_up_after=None, max_seconds=30)
        self.connect_timeout = connect_timeout
        self.logs: dict[str, StreamLog] = {}  # by CallSid
        self.handsets: dict[str, Handset] = {}  # by phone number

    async def phone_socket(self, request: web.Request) -> web.WebSocketResponse:
        """``GET /_sim/phone?to=+1555…``: the softphone registers as the phone of a number."""
        number = request.query.get("to", "")
        if not (number.startswith("+") and number[1:].isdigit() and 8 <= len(number) <= 16):
            raise web.HTTPBadRequest(text="to must be an E.164 number")
        ws = web.WebSocketResponse(max_msg_size=64 * 1024, heartbeat=20)
        await ws.prepare(request)
        handset = Handset(ws, number)
        previous = self.handsets.get(number)
        if previous is not None:  # the newest page owns the number
            previous.hung_up.set()
            await previous.ws.close(code=4000, message=b"replaced by another softphone")
        self.handsets[number] = handset
        await handset.notify("ready", to=number)
        try:
            async for msg in ws:
                if msg.type == WSMsgType.BINARY:
                    if handset.in_call:
                        handset.heard(msg.data)
                elif msg.type == WSMsgType.TEXT:
                    with contextlib.suppress(ValueError, AttributeError):
                        if json.loads(msg.data).get("type") == "hangup":
                            handset.hung_up.set()
        finally:
            handset.hung_up.set()
            if self.handsets.get(number) is handset:
                del self.handsets[number]
        return ws

    async def __call__(self, call: SimCall, stream: StreamRequest) -> None:
        handset = self.handsets.get(call.to)
        if handset is not None and handset.in_call:
            handset = None  # busy: a second call to the same softphone gets the default caller
        script = self.scripts.get(call.to, self.default_script)
        if handset is not None:
            script = CallerScript(hang_up_after=None, max_seconds=4 * 3600, wait_for_greeting=False)
            handset.in_call = True
            handset.hung_up.clear()
            handset.mic.clear()
        log = StreamLog(stream_sid="MZ" + secrets.token_hex(16), call_sid=call.sid)
        self.logs[call.sid] = log
        signature = self.validator.compute_signature(stream.url, {})
        try:
            async with websockets.connect(
                stream.url,
                additional_headers={"x-twilio-signature": signature},
                open_timeout=self.connect_timeout,
                max_size=2**22,
                ping_interval=None,
            ) as ws:
                if handset is not None:
                    await handset.notify("connected", call_sid=call.sid, stream_sid=log.stream_sid)
                await _Session(ws, call, stream, script, log, self.book, handset).run()
        except (OSError, websockets.InvalidHandshake, TimeoutError) as err:
            log.errors.append(f"connect: {err}")
        except websockets.ConnectionClosed as err:
            log.close_code = err.rcvd.code if err.rcvd else None
        finally:
            if handset is not None:
                handset.in_call = False
                await handset.notify("ended", call_sid=call.sid, close_code=log.close_code)


class _Session:
    def __init__(
        self,
        ws: ClientConnection,
        call: SimCall,
        stream: StreamRequest,
        script: CallerScript,
        log: StreamLog,
        book: ScriptBook,
        handset: Handset | None = None,
    ) -> None:
        self.ws = ws
        self.handset = handset
        self.call = call
        self.stream = stream
        self.script = script
        self.log = log
        self.book = book
        self.seq = 0
        self.chunk = 0
        self.t0 = 0.0
        # Playout buffer: audio bytes and marks in arrival order.
        self.playout: deque[bytes | str] = deque()
        self.buffered = 0
        self.persona_started: float | None = None  # when the current stretch began playing
        self.persona_quiet_since: float = 0.0
        self.inbound: deque[bytes] = deque()
        self.speaking_until = 0.0
        self.greeting_heard = False
        self.awaiting_reply = False  # said something; the persona has not answered yet
        self.marks_due: list[str] = []
        self.was_playing = False
        self.done = asyncio.Event()

    def now_ms(self) -> float:
        return (time.monotonic() - self.t0) * 1000

    def _next_seq(self) -> str:
        self.seq += 1
        return str(self.seq)

    async def _send(self, msg: dict[str, Any]) -> None:
        await self.ws.send(json.dumps(msg, separators=(",", ":")))

    async def run(self) -> None:
        sid = self.log.stream_sid
        await self._send({"event": "connected", "protocol": "Call", "version": "1.0.0"})
        self.t0 = time.monotonic()
        await self._send(
            {
                "event": "start",
                "sequenceNumber": self._next_seq(),
                "start": {
                    "accountSid": self.call.account_sid,
                    "streamSid": sid,
                    "callSid": self.call.sid,
                    "tracks": ["inbound"],
                    "customParameters": self.stream.parameters,
                    "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
                },
                "streamSid": sid,
            }
        )
        reader = asyncio.create_task(self._read())
        try:
            await self._tick_loop()
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, websockets.ConnectionClosed):
                await reader

    async def _tick_loop(self) -> None:
        script = self.script
        pending = list(script.utterances)
        dtmf = sorted(script.dtmf)
        raw = sorted(script.raw)
        deadline = time.monotonic()
        last_reply_done: float | None = None
        handset = self.handset
        while not self.done.is_set() and not self.call.ended.is_set():
            if handset is not None and handset.hung_up.is_set():
                break
            now = time.monotonic()
            elapsed = now - self.t0
            if elapsed > script.max_seconds:
                break
            played = self._play_one_frame()
            if handset is not None and played:
                await handset.play(played)
            persona_playing = self.buffered > 0
            # Decide whether to start the next utterance.
            if pending and not self.inbound:
                nxt = pending[0]
                quiet_for = now - self.persona_quiet_since if not persona_playing else 0.0
                ready = (
                    nxt.barge_in_after is not None
                    and persona_playing
                    and self.persona_started is not None
                    and now - self.persona_started >= nxt.barge_in_after
                ) or (
                    nxt.barge_in_after is None
                    and not persona_playing
                    and not self.awaiting_reply
                    and quiet_for >= nxt.after_silence
                    and (self.greeting_heard or not script.wait_for_greeting)
                )
                if ready:
                    pending.pop(0)
                    self._say(nxt)
                    last_reply_done = None
            if not pending and not self.inbound and script.hang_up_after is not None:
                # Done talking: hang up once the reply to the last utterance has played out.
                if persona_playing or self.speaking_until > now or self.awaiting_reply:
                    last_reply_done = None
                elif last_reply_done is None:
                    last_reply_done = now
                elif now - last_reply_done >= script.hang_up_after and self.greeting_heard:
                    break
            while dtmf and dtmf[0][0] <= elapsed:
                _, digit = dtmf.pop(0)
                self.log.events.append((self.now_ms(), "dtmf", digit))
                await self._send(
                    {
                        "event": "dtmf",
                        "streamSid": self.log.stream_sid,
                        "sequenceNumber": self._next_seq(),
                        "dtmf": {"track": "inbound_track", "digit": digit},
                    }
                )
            while raw and raw[0][0] <= elapsed:
                _, junk = raw.pop(0)
                self.log.events.append((self.now_ms(), "raw", len(junk)))
                await self.ws.send(junk.replace("{streamSid}", self.log.stream_sid))
            if handset is not None:
                frame = handset.next_frame()
            else:
                frame = self.inbound.popleft() if self.inbound else SILENCE_FRAME
            self.chunk += 1
            await self._send(
                {
                    "event": "media",
                    "sequenceNumber": self._next_seq(),
                    "media": {
                        "track": "inbound",
                        "chunk": str(self.chunk),
                        "timestamp": str(int(self.now_ms())),
                        "payload": base64.b64encode(frame).decode(),
                    },
                    "streamSid": self.log.stream_sid,
                }
            )
            await self._flush_marks()
            deadline += FRAME_S
            delay = deadline - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            elif delay < -0.2:  # fell far behind (loaded machine): resync, don't burst
                deadline = time.monotonic()
        if not self.done.is_set():
            await self._stop()

    def _say(self, utt: Utterance) -> None:
        text = utt.text
        if utt.ulaw is not None:  # real speech for a real recognizer: no code, no book entry
            audio = utt.ulaw
        else:
            audio = encode_utterance(self.book.register(text), text)
            if utt.wav is not None:
                audio = audio[: CODE_MS * 8] + wav_to_ulaw(utt.wav)
        frames = split_frames(audio)
        start = self.now_ms()
        self.inbound.extend(frames)
        end = start + len(frames) * FRAME_S * 1000
        self.speaking_until = time.monotonic() + len(frames) * FRAME_S
        self.awaiting_reply = True
        self.log.said.append((start, end, text))
        self.log.events.append((start, "say", text))

    def _play_one_frame(self) -> bytes:
        """Consume 20 ms of the playout buffer, as the caller's earpiece would.

        Marks are passed as playback reaches them (no silence is spent on them, as on a real
        line) and echoed right after. A heard stretch continues as long as every tick found
        audio to play; a tick with nothing buffered ends it (a real underrun or a turn's end),
        so gaps in ``heard`` are what the caller would notice, not scheduling jitter here.
        """
        need = FRAME_BYTES
        now_ms = self.now_ms()
        played = bytearray()
        while self.playout and (need or isinstance(self.playout[0], str)):
            item = self.playout[0]
            if isinstance(item, str):
                self.marks_due.append(self.playout.popleft())
                continue
            take = item[:need]
            if len(take) == len(item):
                self.playout.popleft()
            else:
                self.playout[0] = item[need:]
            need -= len(take)
            self.buffered -= len(take)
            played += take
        if played:
            if self.was_playing and self.log.heard:
                seg = self.log.heard[-1]
            else:
                seg = Heard(now_ms, now_ms)
                self.log.heard.append(seg)
                self.persona_started = time.monotonic()
            seg.audio += played
            seg.end_ms = max(seg.end_ms, now_ms) + len(played) / 8
        self.was_playing = bool(played)
        if self.buffered <= 0 and not any(isinstance(i, bytes) for i in self.playout):
            if self.persona_started is not None:
                self.greeting_heard = True
                self.persona_started = None
                self.persona_quiet_since = time.monotonic()
        return bytes(played)

    async def _flush_marks(self, *, cleared: bool = False) -> None:
        """Echo marks whose audio has all played (with ``cleared``: every pending mark)."""
        if cleared:
            self.was_playing = False
            while self.playout:
                item = self.playout.popleft()
                if isinstance(item, str):
                    self.marks_due.append(item)
                else:
                    self.buffered -= len(item)
        else:
            while self.playout and isinstance(self.playout[0], str):  # all before it has played
                self.marks_due.append(self.playout.popleft())
        due, self.marks_due = self.marks_due, []
        for name in due:
            self.log.marks_echoed.append((self.now_ms(), name, cleared))
            await self._send(
                {
                    "event": "mark",
                    "sequenceNumber": self._next_seq(),
                    "streamSid": self.log.stream_sid,
                    "mark": {"name": name},
                }
            )

    async def _read(self) -> None:
        async for raw in self.ws:
            t = self.now_ms()
            if isinstance(raw, bytes):
                self.log.errors.append(f"{t:.0f} ms: binary frame (Twilio expects JSON text)")
                continue
            try:
                msg = json.loads(raw)
                event = msg["event"]
            except (ValueError, KeyError, TypeError):
                self.log.errors.append(f"{t:.0f} ms: invalid message (31951)")
                continue
            if msg.get("streamSid") != self.log.stream_sid:
                self.log.errors.append(f"{t:.0f} ms: {event} with wrong streamSid (31951)")
                continue
            if event == "media":
                try:
                    audio = base64.b64decode(msg["media"]["payload"], validate=True)
                except (KeyError, TypeError, ValueError):
                    self.log.errors.append(f"{t:.0f} ms: media without a valid payload (31951)")
                    continue
                self.log.media_received.append((t, len(audio)))
                if audio:
                    if not self.inbound:  # audio after we finished speaking is the reply
                        self.awaiting_reply = False
                    if self.buffered <= 0 and self.persona_started is None:
                        self.persona_started = time.monotonic()
                    self.playout.append(audio)
                    self.buffered += len(audio)
            elif event == "mark":
                name = (msg.get("mark") or {}).get("name")
                if not isinstance(name, str):
                    self.log.errors.append(f"{t:.0f} ms: mark without a name (31951)")
                    continue
                self.log.events.append((t, "mark-sent", name))
                self.playout.append(name)
                await self._flush_marks()  # immediately if nothing is buffered before it
            elif event == "clear":
                self.log.clears.append(t)
                self.log.events.append((t, "clear", None))
                if self.handset is not None:  # the page drops what it has not played yet
                    await self.handset.notify("clear")
                await self._flush_marks(cleared=True)
                self.buffered = 0
                self.persona_started = None
                self.persona_quiet_since = time.monotonic()
            else:
                self.log.errors.append(f"{t:.0f} ms: unknown event {event!r} (31951)")
        # The server closed the socket: <Connect> ends, and with it the call.
        self.log.close_code = self.ws.close_code
        self.log.close_reason = self.ws.close_reason or ""
        self.log.events.append((self.now_ms(), "server-closed", self.log.close_code))
        self.done.set()

    async def _stop(self) -> None:
        with contextlib.suppress(websockets.ConnectionClosed):
            await self._send(
                {
                    "event": "stop",
                    "sequenceNumber": self._next_seq(),
                    "stop": {"accountSid": self.call.account_sid, "callSid": self.call.sid},
                    "streamSid": self.log.stream_sid,
                }
            )
            self.log.events.append((self.now_ms(), "stop", None))
            await self.ws.close(1000)
