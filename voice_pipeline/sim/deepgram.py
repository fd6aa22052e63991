"""The Deepgram live-transcription stand-in: ``GET /v1/listen`` upgraded to a WebSocket.

Follows protocols.md §2 (checklist §2.8):

- auth ``Authorization: Token <key>`` (or ``Bearer``, any case); otherwise HTTP 401 with a
  ``dg-error`` header and the spec's error body; every upgrade answer carries ``dg-request-id``;
- query validation: booleans must be ``true``/``false`` (``True`` → 400, as the live API does),
  ``encoding`` needs ``sample_rate``, ``utterance_end_ms`` needs ``interim_results=true``,
  integers must be integers → HTTP 400;
- binary frames are audio; ``KeepAlive``, ``Finalize``, ``CloseStream`` text frames; an empty
  binary frame or undecodable audio → close 1008 ``DATA-0000``; no frame for ``timeout`` seconds
  (10 s; ``KeepAlive`` only counts once some audio has arrived) → close 1011 ``NET-0001``;
- ``Results`` (interim, ``is_final``, ``speech_final``, ``from_finalize``), ``SpeechStarted``
  (with ``vad_events``), ``UtteranceEnd`` (with ``utterance_end_ms``), empty-transcript finals
  over long silence, and ``Metadata`` then close 1000 after ``CloseStream``.

Time in messages is *stream time* (seconds of audio received), as Deepgram's is. Speech is
found by a pluggable :class:`SpeechDetector` on the decoded audio (energy by default, Silero VAD
with the local engines); the words come from a pluggable :class:`Recognizer` (scripted by
default: the caller's utterance code, see signals.py; Whisper with the local engines).

Choices where protocols.md is silent: interim results every 200 ms of speech; an endpoint is
``endpointing`` ms of silence after speech (``endpointing=false``: finals at
``utterance_end_ms`` or 1 s of silence, never ``speech_final``); unknown control types are
ignored, malformed JSON closes with 1008 ``DATA-0000``; only ``mulaw``, ``alaw`` and
``linear16`` can be decoded here (others close with ``DATA-0000`` on the first audio).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

import numpy as np
from aiohttp import WSMsgType, web

from voice_pipeline.audio import alaw_to_pcm16, ulaw_to_pcm16
from voice_pipeline.sim.latency import Latency
from voice_pipeline.sim.signals import ScriptBook, decode_number, utterance_ms

BOOL_PARAMS = (
    "interim_results",
    "vad_events",
    "smart_format",
    "punctuate",
    "no_delay",
    "diarize",
    "numerals",
    "profanity_filter",
    "filler_words",
    "multichannel",
    "dictation",
    "detect_entities",
    "mip_opt_out",
)
INT_PARAMS = ("sample_rate", "channels", "utterance_end_ms")
ENCODINGS = (
    "linear16",
    "linear32",
    "flac",
    "alaw",
    "mulaw",
    "amr-nb",
    "amr-wb",
    "opus",
    "ogg-opus",
    "speex",
    "g729",
)
DECODABLE = ("mulaw", "alaw", "linear16")
SPEECH_RMS = 400  # int16 RMS above which a 20 ms frame is speech
INTERIM_EVERY_MS = 200
SILENT_FINAL_EVERY_S = 2.0


class Recognizer(Protocol):
    """Turns one utterance's audio into text (8 kHz μ-law)."""

    def interim(self, audio: bytes, speech_ms: float) -> str: ...

    async def final(self, audio: bytes) -> str: ...


class SpeechDetector(Protocol):
    """Per stream: is this 20 ms of 16-bit PCM speech? (Stateful: one per session.)"""

    def is_speech(self, pcm: np.ndarray) -> bool: ...


class EnergyDetector:
    def is_speech(self, pcm: np.ndarray) -> bool:
        if not len(pcm):
            return False
        return float(np.sqrt(np.mean(pcm.astype(np.float64) ** 2))) >= SPEECH_RMS


def energy_detector(sample_rate: int) -> SpeechDetector:
    return EnergyDetector()


class ScriptedRecognizer:
    """Reads the utterance code the scripted caller put in front of its speech."""

    def __init__(self, book: ScriptBook) -> None:
        self.book = book
        self._cache: dict[bytes, str] = {}

    def _text(self, audio: bytes) -> str:
        head = audio[:1280]
        if head not in self._cache:
            self._cache[head] = self.book.text(decode_number(audio)) or ""
        return self._cache[head]

    def interim(self, audio: bytes, speech_ms: float) -> str:
        words = self._text(audio).split()
        if not words:
            return ""
        share = min(1.0, speech_ms / utterance_ms(" ".join(words)))
        return " ".join(words[: int(len(words) * share)])

    async def final(self, audio: bytes) -> str:
        return self._text(audio)


@dataclass
class DeepgramFaults:
    upgrade_status: int | None = None  # answer the upgrade with this HTTP status (e.g. 503)
    drop_after_s: float | None = None  # drop the TCP connection (no close frame) after this
    drop_once: bool = False  # the drop hits only the next session (a reconnect then works)
    stall: bool = False  # stop sending results (the socket stays open)
    malformed_after_s: float | None = None  # send one non-JSON text frame after this


@dataclass
class ListenParams:
    encoding: str | None
    sample_rate: int | None
    interim_results: bool
    endpointing: int | None  # None = disabled
    utterance_end_ms: int | None
    vad_events: bool
    punctuate: bool
    model: str
    raw: dict[str, str] = field(default_factory=dict)


class ParamError(ValueError):
    pass


def parse_params(query: dict[str, str]) -> ListenParams:
    for name in BOOL_PARAMS:
        if name in query and query[name] not in ("true", "false"):
            raise ParamError(
                f"Invalid value for {name}: expected true or false, got {query[name]!r}"
            )
    for name in INT_PARAMS:
        if name in query and not query[name].isdigit():
            raise ParamError(f"Invalid value for {name}: expected an integer")
    encoding = query.get("encoding")
    if encoding is not None and encoding not in ENCODINGS:
        raise ParamError(f"Invalid encoding {encoding!r}")
    if encoding is not None and "sample_rate" not in query:
        raise ParamError("sample_rate is required when encoding is set")
    raw_endpointing = query.get("endpointing", "10")
    if raw_endpointing == "false":
        endpointing = None
    elif raw_endpointing.isdigit():
        endpointing = int(raw_endpointing)
    elif raw_endpointing == "true":
        endpointing = 10
    else:
        raise ParamError("Invalid value for endpointing: expected an integer or false")
    interim = query.get("interim_results") == "true"
    utterance_end = int(query["utterance_end_ms"]) if "utterance_end_ms" in query else None
    if utterance_end is not None and not interim:
        raise ParamError("utterance_end_ms requires interim_results=true")
    return ListenParams(
        encoding=encoding,
        sample_rate=int(query["sample_rate"]) if "sample_rate" in query else None,
        interim_results=interim,
        endpointing=endpointing,
        utterance_end_ms=utterance_end,
        vad_events=query.get("vad_events") == "true",
        punctuate=query.get("punctuate") == "true" or query.get("smart_format") == "true",
        model=query.get("model", "base"),
        raw=dict(query),
    )


class DeepgramSim:
    def __init__(
        self,
        *,
        api_key: str | None = None,
        recognizer: Recognizer | None = None,
        detector: Callable[[int], SpeechDetector] | None = None,
        book: ScriptBook | None = None,
        latency: Latency | None = None,
        timeout: float = 10.0,
    ) -> None:
        self.api_key = api_key  # None: any key is accepted (a key is still required)
        self.book = book or ScriptBook()
        self.recognizer = recognizer or ScriptedRecognizer(self.book)
        self.detector = detector or energy_detector  # sample rate -> a fresh detector
        self.latency = latency or Latency()
        self.timeout = timeout
        self.faults = DeepgramFaults()
        self.sessions: list[ListenSession] = []
        self.app = web.Application()
        self.app.router.add_get("/v1/listen", self._listen)

    def _authorized(self, request: web.Request) -> bool:
        scheme, _, key = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() not in ("token", "bearer") or not key.strip():
            return False
        return self.api_key is None or key.strip() == self.api_key

    async def _listen(self, request: web.Request) -> web.StreamResponse:
        request_id = str(uuid.uuid4())
        headers = {"dg-request-id": request_id}
        if self.faults.upgrade_status:
            return _http_error(self.faults.upgrade_status, "Service unavailable", request_id)
        if not self._authorized(request):
            return _http_error(401, "Websocket initialized with invalid credentials.", request_id)
        try:
            params = parse_params(dict(request.query))
        except ParamError as err:
            return _http_error(400, str(err), request_id)
        ws = web.WebSocketResponse(max_msg_size=2**20, autoping=True)
        ws.headers.update(headers)
        await ws.prepare(request)
        session = ListenSession(self, ws, params, request_id)
        self.sessions.append(session)
        await session.run()
        return ws


def _http_error(status: int, message: str, request_id: str) -> web.Response:
    return web.json_response(
        {"error_code": status, "error_message": message, "request_id": request_id},
        status=status,
        headers={"dg-error": message, "dg-request-id": request_id},
    )


@dataclass
class _Utterance:
    start_s: float
    audio: bytearray = field(default_factory=bytearray)
    speech_ms: float = 0.0
    last_speech_s: float = 0.0
    last_interim_ms: float = 0.0


class ListenSession:
    def __init__(
        self, sim: DeepgramSim, ws: web.WebSocketResponse, params: ListenParams, request_id: str
    ) -> None:
        self.sim = sim
        self.ws = ws
        self.params = params
        self.request_id = request_id
        self.stream_s = 0.0  # seconds of audio received
        self.audio_bytes = 0
        self.sha = hashlib.sha256()
        self.utt: _Utterance | None = None
        self.silence_since_s = 0.0
        self.last_word_end: float | None = None  # pending UtteranceEnd
        self.last_silent_final = 0.0
        self.outbox: asyncio.Queue[tuple[float, dict[str, Any] | str | None]] = asyncio.Queue()
        self.sent: list[dict[str, Any]] = []
        self.got_audio = False
        self.closed_with: tuple[int, str] | None = None
        self.control: list[str] = []
        self._sender_task: asyncio.Task[None] | None = None
        self.detector = sim.detector(params.sample_rate or 8000)

    # ------------------------------------------------------------------ I/O
    async def run(self) -> None:
        sender = self._sender_task = asyncio.create_task(self._sender())
        faults = asyncio.create_task(self._faults())
        try:
            await self._receive()
        finally:
            await self.outbox.put((0.0, None))
            with contextlib.suppress(asyncio.CancelledError, ConnectionError):
                await asyncio.wait_for(sender, 5)
            faults.cancel()
            if not self.ws.closed:
                await self.ws.close()

    async def _receive(self) -> None:
        deadline = time.monotonic() + self.sim.timeout
        while True:
            try:
                msg = await self.ws.receive(timeout=max(0.0, deadline - time.monotonic()))
            except TimeoutError:
                await self._close(1011, "NET-0001")
                return
            if msg.type == WSMsgType.BINARY:
                if not msg.data:
                    await self._close(1008, "DATA-0000")
                    return
                if self.params.encoding not in (None, *DECODABLE):
                    await self._close(1008, "DATA-0000")
                    return
                self.got_audio = True
                deadline = time.monotonic() + self.sim.timeout
                await self._audio(msg.data)
            elif msg.type == WSMsgType.TEXT:
                try:
                    control = json.loads(msg.data)
                    kind = control.get("type")
                except (ValueError, AttributeError):
                    await self._close(1008, "DATA-0000")
                    return
                self.control.append(str(kind))
                if kind == "KeepAlive":
                    if self.got_audio:
                        deadline = time.monotonic() + self.sim.timeout
                elif kind == "Finalize":
                    await self._finish_utterance(from_finalize=True)
                elif kind == "CloseStream":
                    await self._finish_utterance(from_finalize=False)
                    await self._emit(
                        {
                            "type": "Metadata",
                            "transaction_key": "deprecated",
                            "request_id": self.request_id,
                            "sha256": self.sha.hexdigest(),
                            "created": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
                            "duration": round(self.stream_s, 3),
                            "channels": 1,
                        },
                        delay=0.0,
                    )
                    await self.outbox.put((0.0, None))
                    await self._drain_then_close(1000, "")
                    return
            elif msg.type in (
                WSMsgType.CLOSE,
                WSMsgType.CLOSING,
                WSMsgType.CLOSED,
                WSMsgType.ERROR,
            ):
                return

    async def _close(self, code: int, reason: str) -> None:
        self.closed_with = (code, reason)
        await self.ws.close(code=code, message=reason.encode())

    async def _drain_then_close(self, code: int, reason: str) -> None:
        """Close once everything queued before this point has been sent."""
        if self._sender_task is not None:
            with contextlib.suppress(asyncio.CancelledError, ConnectionError):
                await self._sender_task
        await self._close(code, reason)

    async def _sender(self) -> None:
        while True:
            not_before, item = await self.outbox.get()
            if item is None:  # end of stream: everything before it has been sent
                return
            wait = not_before - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            if self.sim.faults.stall or self.ws.closed:
                continue
            try:
                if isinstance(item, str):
                    await self.ws.send_str(item)
                else:
                    self.sent.append(item)
                    await self.ws.send_str(json.dumps(item))
            except ConnectionError:
                return

    async def _faults(self) -> None:
        f = self.sim.faults
        if f.malformed_after_s is not None:
            await asyncio.sleep(f.malformed_after_s)
            await self.outbox.put((time.monotonic(), "{not json"))
        if f.drop_after_s is not None:
            delay = f.drop_after_s
            if f.drop_once:
                f.drop_after_s = None
            await asyncio.sleep(delay)
            transport = self.ws._req.transport if self.ws._req else None
            if transport is not None:
                transport.abort()

    async def _emit(self, msg: dict[str, Any], *, delay: float | None = None) -> None:
        d = self.sim.latency.first_result() if delay is None else delay
        await self.outbox.put((time.monotonic() + d, msg))

    # ------------------------------------------------------------------ recognition
    def _pcm(self, data: bytes) -> bytes:
        if self.params.encoding == "alaw":
            return alaw_to_pcm16(data)
        if self.params.encoding == "linear16":
            return data
        return ulaw_to_pcm16(data)

    async def _audio(self, data: bytes) -> None:
        self.sha.update(data)
        self.audio_bytes += len(data)
        rate = self.params.sample_rate or 8000
        bytes_per_sample = 2 if self.params.encoding == "linear16" else 1
        step = rate * bytes_per_sample // 50  # 20 ms
        for i in range(0, len(data), step):
            chunk = data[i : i + step]
            pcm = np.frombuffer(self._pcm(chunk)[: len(chunk) * 2 // bytes_per_sample], dtype="<i2")
            frame_s = len(chunk) / bytes_per_sample / rate
            await self._frame(chunk, self.detector.is_speech(pcm), frame_s)
            self.stream_s += frame_s

    async def _frame(self, chunk: bytes, speech: bool, frame_s: float) -> None:
        p = self.params
        t = self.stream_s
        if speech:
            if self.utt is None:
                self.utt = _Utterance(start_s=t)
                self.last_word_end = None
                if p.vad_events:
                    await self._emit(
                        {"type": "SpeechStarted", "channel": [0, 1], "timestamp": round(t, 3)},
                        delay=0.0,
                    )
            self.utt.audio += chunk
            self.utt.speech_ms += frame_s * 1000
            self.utt.last_speech_s = t + frame_s
            if (
                p.interim_results
                and self.utt.speech_ms - self.utt.last_interim_ms >= INTERIM_EVERY_MS
            ):
                self.utt.last_interim_ms = self.utt.speech_ms
                text = self.sim.recognizer.interim(bytes(self.utt.audio), self.utt.speech_ms)
                await self._emit(
                    self._results(
                        text,
                        self.utt.start_s,
                        t + frame_s - self.utt.start_s,
                        is_final=False,
                        speech_final=False,
                    )
                )
            return
        if self.utt is not None:
            self.utt.audio += chunk  # trailing silence belongs to the utterance
            silence_ms = (t + frame_s - self.utt.last_speech_s) * 1000
            limit = p.endpointing if p.endpointing is not None else (p.utterance_end_ms or 1000)
            if silence_ms >= limit:
                await self._finish_utterance(
                    from_finalize=False, endpoint=p.endpointing is not None
                )
            return
        if self.last_word_end is not None and p.utterance_end_ms is not None:
            if (t + frame_s - self.last_word_end) * 1000 >= p.utterance_end_ms:
                await self._emit(
                    {
                        "type": "UtteranceEnd",
                        "channel": [0, 1],
                        "last_word_end": round(self.last_word_end, 3),
                    },
                    delay=0.0,
                )
                self.last_word_end = None
        if t - self.last_silent_final >= SILENT_FINAL_EVERY_S:
            self.last_silent_final = t
            await self._emit(
                self._results("", t, frame_s, is_final=True, speech_final=False), delay=0.0
            )

    async def _finish_utterance(self, *, from_finalize: bool, endpoint: bool = False) -> None:
        utt, self.utt = self.utt, None
        if utt is None:
            return
        text = await self.sim.recognizer.final(bytes(utt.audio))
        duration = utt.last_speech_s - utt.start_s
        msg = self._results(
            text,
            utt.start_s,
            duration,
            is_final=True,
            speech_final=endpoint and not from_finalize,
            from_finalize=from_finalize,
        )
        await self._emit(msg)
        self.last_word_end = utt.last_speech_s if text else None
        self.last_silent_final = self.stream_s

    def _results(
        self,
        text: str,
        start: float,
        duration: float,
        *,
        is_final: bool,
        speech_final: bool,
        from_finalize: bool = False,
    ) -> dict[str, Any]:
        words_raw = text.split()
        spoken = [w.strip(".,!?;:\"'").lower() for w in words_raw]
        per = duration / len(words_raw) if words_raw else 0.0
        words = []
        for i, (w, pw) in enumerate(zip(spoken, words_raw, strict=True)):
            word = {
                "word": w,
                "start": round(start + i * per, 3),
                "end": round(start + (i + 1) * per, 3),
                "confidence": 0.98,
            }
            if self.params.punctuate:
                word["punctuated_word"] = pw
            words.append(word)
        transcript = text if self.params.punctuate else " ".join(spoken)
        return {
            "type": "Results",
            "channel_index": [0, 1],
            "duration": round(duration, 3),
            "start": round(start, 3),
            "is_final": is_final,
            "speech_final": speech_final,
            "from_finalize": from_finalize,
            "channel": {
                "alternatives": [
                    {"transcript": transcript, "confidence": 0.98 if words else 0.0, "words": words}
                ]
            },
            "metadata": {
                "request_id": self.request_id,
                "model_info": {
                    "name": f"2-general-{self.params.model}",
                    "version": "2026-01-01.0",
                    "arch": self.params.model,
                },
                "model_uuid": str(uuid.uuid5(uuid.NAMESPACE_URL, self.params.model)),
            },
        }
