"""The ElevenLabs text-to-speech stand-in.

Endpoints (protocols.md §3, checklist §3.7):

- WS ``/v1/text-to-speech/{voice_id}/stream-input`` — one context: the first message must be
  ``{"text": " "}`` (with optional ``voice_settings``, ``generation_config``, key); text is
  buffered and generated at the ``chunk_length_schedule`` thresholds (default 120/160/250/290
  characters), on ``flush``, or per message with ``auto_mode=true``; ``{"text": ""}`` generates
  the rest, sends ``{"isFinal": true}`` and closes 1000; ``" "`` alone is a keep-alive.
- WS ``/v1/text-to-speech/{voice_id}/multi-stream-input`` — up to 5 contexts keyed by
  ``context_id``; ``flush``; ``close_context``; ``close_socket``.
  Audio messages carry ``contextId`` (camelCase), as the SDK models and production clients expect.
- ``POST /v1/text-to-speech/{voice_id}/stream`` (and the non-streaming sibling) — chunked raw
  audio with ``character-cost`` and ``request-id`` headers; 401/422 bodies as documented.

``close_context`` discards the context's text not yet flushed (or scheduled); text already
flushed is still synthesized and sent, then ``{"isFinal": true, "contextId": …}`` — the
end-of-turn behaviour verified against the live API (protocols.md §3.2: flush + close_context
yields exactly one isFinal after the last audio). So after a barge-in, audio of the closed
context keeps arriving for a while, and the client must drop it by ``contextId``, as the docs
say it must with the real service.

Audio chunks carry ``alignment`` and ``normalizedAlignment`` (``chars``, ``charStartTimesMs``
relative to the chunk, ``charDurationsMs``). Auth: ``xi-api-key`` header, or ``xi_api_key`` /
``xi-api-key`` / ``authorization`` in the first message or query. Idle for
``inactivity_timeout`` seconds (20; max 180) → the ``input_timeout_exceeded`` error, close 1008.

Audio comes from a pluggable synthesizer (``Synthesizer``): by default a steady tone whose length
is ``ms_per_char`` per character, so a test knows how long each clause lasts; the local engine
(Piper) plugs in behind the same interface. Formats produced here: ``ulaw_8000``, ``alaw_8000``,
``pcm_8000/16000/22050/24000/44100``; an MP3/Opus request is refused (close 1008 / HTTP 422)
rather than answered with audio in the wrong format.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import math
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
from aiohttp import WSMsgType, web

from voice_pipeline.audio import pcm16_to_alaw, pcm16_to_ulaw
from voice_pipeline.sim.latency import Latency

DEFAULT_SCHEDULE = [120, 160, 250, 290]
MAX_CONTEXTS = 5
PCM_RATES = {
    "pcm_8000": 8000,
    "pcm_16000": 16000,
    "pcm_22050": 22050,
    "pcm_24000": 24000,
    "pcm_44100": 44100,
    "pcm_48000": 48000,
}
FORMATS = ("ulaw_8000", "alaw_8000", *PCM_RATES)
WS_ONLY_UNSUPPORTED_MODELS = ("eleven_v3",)


class Synthesizer(Protocol):
    """Text → 16-bit mono PCM at ``rate`` Hz (the stand-in encodes to the requested format)."""

    async def synthesize(self, text: str, rate: int) -> np.ndarray: ...


class ToneSynthesizer:
    """Deterministic stand-in speech: ``ms_per_char`` of a two-partial tone per character."""

    def __init__(self, ms_per_char: float = 65.0, pitch: float = 220.0) -> None:
        self.ms_per_char = ms_per_char
        self.pitch = pitch

    async def synthesize(self, text: str, rate: int) -> np.ndarray:
        n = int(rate * len(text) * self.ms_per_char / 1000)
        t = np.arange(n) / rate
        wave = 5000 * (
            0.7 * np.sin(2 * np.pi * self.pitch * t) + 0.3 * np.sin(2 * np.pi * 2 * self.pitch * t)
        )
        return wave.astype("<i2")


def encode(pcm: np.ndarray, fmt: str) -> bytes:
    raw = pcm.astype("<i2").tobytes()
    if fmt == "ulaw_8000":
        return pcm16_to_ulaw(raw)
    if fmt == "alaw_8000":
        return pcm16_to_alaw(raw)
    return raw


def rate_of(fmt: str) -> int:
    return 8000 if fmt in ("ulaw_8000", "alaw_8000") else PCM_RATES[fmt]


def bytes_per_ms(fmt: str) -> float:
    return rate_of(fmt) / 1000 * (1 if fmt in ("ulaw_8000", "alaw_8000") else 2)


def credits_per_char(model_id: str) -> float:
    return 0.5 if ("flash" in model_id or "turbo" in model_id) else 1.0


@dataclass
class ElevenLabsFaults:
    drop_after_chunks: int | None = None  # drop the connection after sending N audio chunks
    drop_once: bool = False  # only the first time
    stall: bool = False  # accept text but never answer
    http_status: int | None = None  # answer HTTP requests with this status (429, 500 …)


@dataclass
class Generation:
    context_id: str | None
    text: str
    requested_at: float
    first_audio_at: float | None = None
    audio_bytes: int = 0


@dataclass
class TtsSocketLog:
    path: str
    voice_id: str
    query: dict[str, str]
    received: list[dict[str, Any]] = field(default_factory=list)
    generations: list[Generation] = field(default_factory=list)
    characters: int = 0  # characters synthesized (billed)
    close: tuple[int, str] | None = None


class ElevenLabsSim:
    def __init__(
        self,
        *,
        api_key: str | None = None,
        synthesizer: Synthesizer | None = None,
        latency: Latency | None = None,
        chunk_chars: int = 40,
    ) -> None:
        self.api_key = api_key  # None: any non-empty key
        self.synthesizer = synthesizer or ToneSynthesizer()
        self.latency = latency or Latency()
        self.chunk_chars = chunk_chars  # characters of text per audio chunk
        self.faults = ElevenLabsFaults()
        self.sockets: list[TtsSocketLog] = []
        self.http_characters = 0
        self.app = web.Application()
        base = "/v1/text-to-speech/{voice_id}"
        self.app.router.add_get(base + "/stream-input", self._single)
        self.app.router.add_get(base + "/multi-stream-input", self._multi)
        self.app.router.add_post(base + "/stream", self._http)
        self.app.router.add_post(base, self._http)

    def _key_ok(self, key: str | None) -> bool:
        return bool(key) and (self.api_key is None or key == self.api_key)

    # ------------------------------------------------------------------ HTTP
    async def _http(self, request: web.Request) -> web.StreamResponse:
        if self.faults.http_status:
            status = self.faults.http_status
            code = "too_many_concurrent_requests" if status == 429 else "system_busy"
            return web.json_response(
                {"detail": {"status": code, "message": "stand-in fault"}}, status=status
            )
        if not self._key_ok(request.headers.get("xi-api-key")):
            return web.json_response(
                {"detail": {"status": "invalid_api_key", "message": "Invalid API key"}}, status=401
            )
        fmt = request.query.get("output_format", "mp3_44100_128")
        try:
            body = await request.json()
        except ValueError:
            body = None
        if not isinstance(body, dict) or not isinstance(body.get("text"), str):
            return web.json_response(
                {
                    "detail": [
                        {
                            "loc": ["body", "text"],
                            "msg": "field required",
                            "type": "value_error.missing",
                        }
                    ]
                },
                status=422,
            )
        if fmt not in FORMATS:
            return web.json_response(
                {
                    "detail": [
                        {
                            "loc": ["query", "output_format"],
                            "msg": f"stand-in cannot produce {fmt}",
                            "type": "value_error",
                        }
                    ]
                },
                status=422,
            )
        text = body["text"]
        model = str(body.get("model_id") or "eleven_multilingual_v2")
        self.http_characters += len(text)
        cost = math.ceil(len(text) * credits_per_char(model))
        resp = web.StreamResponse(
            headers={
                "Content-Type": "application/octet-stream",
                "character-cost": str(cost),
                "request-id": uuid.uuid4().hex,
            }
        )
        await asyncio.sleep(self.latency.first_result())
        await resp.prepare(request)
        try:
            for piece in _pieces(text, self.chunk_chars):
                pcm = await self.synthesizer.synthesize(piece, rate_of(fmt))
                await resp.write(encode(pcm, fmt))
            await resp.write_eof()
        except ConnectionResetError:  # the client went away: nothing left to send
            pass
        return resp

    # ------------------------------------------------------------------ WebSockets
    async def _single(self, request: web.Request) -> web.StreamResponse:
        return await self._socket(request, multi=False)

    async def _multi(self, request: web.Request) -> web.StreamResponse:
        return await self._socket(request, multi=True)

    async def _socket(self, request: web.Request, *, multi: bool) -> web.StreamResponse:
        ws = web.WebSocketResponse(max_msg_size=2**20)
        await ws.prepare(request)
        log = TtsSocketLog(request.path, request.match_info["voice_id"], dict(request.query))
        self.sockets.append(log)
        session = _TtsSession(self, ws, log, request, multi=multi)
        await session.run()
        return ws


def _pieces(text: str, size: int) -> list[str]:
    """Split at word boundaries into pieces of about ``size`` characters."""
    out, cur = [], ""
    for word in text.split(" "):
        cand = f"{cur} {word}" if cur else word
        if len(cand) > size and cur:
            out.append(cur + " ")
            cur = word
        else:
            cur = cand
    if cur.strip():
        out.append(cur)
    return out


class _Context:
    def __init__(self, cid: str | None) -> None:
        self.id = cid
        self.buffer = ""
        self.queue: asyncio.Queue[str | None] = asyncio.Queue()
        self.task: asyncio.Task[None] | None = None
        self.closed = False
        self.schedule_index = 0
        self.initialized = False


class _TtsSession:
    def __init__(
        self,
        sim: ElevenLabsSim,
        ws: web.WebSocketResponse,
        log: TtsSocketLog,
        request: web.Request,
        *,
        multi: bool,
    ) -> None:
        self.sim = sim
        self.ws = ws
        self.log = log
        self.multi = multi
        q = request.query
        self.header_key = request.headers.get("xi-api-key") or q.get("authorization")
        self.fmt = q.get("output_format", "mp3_44100")
        self.model = q.get("model_id", "eleven_multilingual_v2")
        self.auto_mode = q.get("auto_mode") == "true"
        try:
            self.timeout = min(180.0, float(q.get("inactivity_timeout", "20")))
        except ValueError:
            self.timeout = 20.0
        self.schedule = list(DEFAULT_SCHEDULE)
        self.contexts: dict[str | None, _Context] = {}
        self.send_lock = asyncio.Lock()
        self.chunks_sent = 0
        self.authed = False

    async def _error(self, error: str, message: str) -> None:
        with contextlib.suppress(ConnectionError):
            await self.ws.send_str(json.dumps({"message": message, "error": error, "code": 1008}))
        await self._close(1008, error)

    async def _close(self, code: int, reason: str) -> None:
        self.log.close = (code, reason)
        await self.ws.close(code=code, message=reason.encode()[:120])

    async def run(self) -> None:
        if self.fmt not in FORMATS:
            await self._error("invalid_output_format", f"stand-in cannot produce {self.fmt}")
            return
        if self.model in WS_ONLY_UNSUPPORTED_MODELS:
            await self._error(
                "model_not_supported", f"{self.model} is not available over WebSockets"
            )
            return
        try:
            await self._loop()
        finally:
            for ctx in self.contexts.values():
                if ctx.task and not ctx.task.done():
                    ctx.task.cancel()
            if not self.ws.closed:
                await self.ws.close()

    async def _loop(self) -> None:
        while True:
            try:
                msg = await self.ws.receive(timeout=self.timeout)
            except TimeoutError:
                await self._error(
                    "input_timeout_exceeded",
                    "Have not received a new text input within the timeout of "
                    f"{self.timeout:.1f} seconds. Streaming input terminated. Please make sure to "
                    "either feed the input in the timely manner, or to send the end of input text "
                    '(empty string "") when done.',
                )
                return
            if msg.type != WSMsgType.TEXT:
                if msg.type == WSMsgType.BINARY:
                    await self._error("invalid_message", "messages must be JSON text frames")
                return
            try:
                data = json.loads(msg.data)
                if not isinstance(data, dict):
                    raise ValueError
            except ValueError:
                await self._error("invalid_message", "message is not a JSON object")
                return
            self.log.received.append(data)
            if not self.authed:
                key = (
                    self.header_key
                    or data.get("xi_api_key")
                    or data.get("xi-api-key")
                    or data.get("authorization")
                )
                if not self.sim._key_ok(key):
                    await self._error("invalid_api_key", "Invalid API key")
                    return
                self.authed = True
            if self.multi:
                if not await self._multi_message(data):
                    return
            elif not await self._single_message(data):
                return

    async def _single_message(self, data: dict[str, Any]) -> bool:
        ctx = self.contexts.get(None)
        text = data.get("text")
        if ctx is None:
            if text != " ":
                await self._error("invalid_message", 'the first message must be {"text": " "}')
                return False
            ctx = self._open(None, data)
            return True
        if text == "":
            self._flush(ctx)
            ctx.queue.put_nowait(None)  # end of input: isFinal, then close
            if ctx.task:
                await ctx.task
            await self._close(1000, "")
            return False
        if isinstance(text, str) and text != " ":
            self._add(ctx, text, flush=bool(data.get("flush")))
        elif data.get("flush"):
            self._flush(ctx)
        return True

    async def _multi_message(self, data: dict[str, Any]) -> bool:
        if data.get("close_socket"):
            for ctx in list(self.contexts.values()):
                if not ctx.closed:
                    self._flush(ctx)
                    ctx.closed = True
                    ctx.queue.put_nowait(None)
            await asyncio.gather(
                *(c.task for c in self.contexts.values() if c.task), return_exceptions=True
            )
            await self._close(1000, "")
            return False
        cid = data.get("context_id")
        if not isinstance(cid, str) or not cid:
            await self._error("invalid_message", "context_id is required")
            return False
        ctx = self.contexts.get(cid)
        if ctx is None or ctx.closed:
            live = sum(1 for c in self.contexts.values() if not c.closed)
            if live >= MAX_CONTEXTS:
                await self._error(
                    "max_contexts_exceeded",
                    f"Maximum number of concurrent contexts ({MAX_CONTEXTS}) exceeded",
                )
                return False
            ctx = self._open(cid, data)  # a closed id may be reused, starting fresh
        elif "voice_settings" in data:
            await self._error("invalid_message", "voice_settings only in a context's first message")
            return False
        if data.get("close_context"):
            ctx.closed = True
            ctx.buffer = ""  # text never flushed is not spoken
            ctx.queue.put_nowait(None)  # isFinal after what was flushed
            return True
        text = data.get("text")
        if isinstance(text, str) and text.strip():
            self._add(ctx, text, flush=bool(data.get("flush")))
        elif data.get("flush"):
            self._flush(ctx)
        return True

    def _open(self, cid: str | None, data: dict[str, Any]) -> _Context:
        ctx = _Context(cid)
        schedule = (data.get("generation_config") or {}).get("chunk_length_schedule")
        if isinstance(schedule, list) and schedule and all(isinstance(x, int) for x in schedule):
            self.schedule = schedule
        self.contexts[cid] = ctx
        ctx.task = asyncio.create_task(self._generate(ctx))
        text = data.get("text")
        if isinstance(text, str) and text.strip():
            self._add(ctx, text, flush=bool(data.get("flush")))
        return ctx

    def _add(self, ctx: _Context, text: str, *, flush: bool) -> None:
        ctx.buffer += text
        if flush or self.auto_mode:
            self._flush(ctx)
            return
        threshold = self.schedule[min(ctx.schedule_index, len(self.schedule) - 1)]
        if len(ctx.buffer) >= threshold:
            cut = ctx.buffer.rfind(" ", 0, len(ctx.buffer)) + 1 or len(ctx.buffer)
            ctx.queue.put_nowait(ctx.buffer[:cut])
            ctx.buffer = ctx.buffer[cut:]
            ctx.schedule_index += 1

    def _flush(self, ctx: _Context) -> None:
        if ctx.buffer.strip():
            ctx.queue.put_nowait(ctx.buffer)
        ctx.buffer = ""

    async def _generate(self, ctx: _Context) -> None:
        try:
            while True:
                text = await ctx.queue.get()
                if text is None:
                    await self._send({"isFinal": True, **self._cid(ctx)})
                    return
                await self._speak(ctx, text)
        except (ConnectionError, asyncio.CancelledError):
            return

    def _cid(self, ctx: _Context) -> dict[str, str]:
        return {"contextId": ctx.id} if self.multi and ctx.id is not None else {}

    async def _speak(self, ctx: _Context, text: str) -> None:
        gen = Generation(ctx.id, text, time.monotonic())
        self.log.generations.append(gen)
        self.log.characters += len(text)
        await asyncio.sleep(self.sim.latency.first_result())
        for piece in _pieces(text, self.sim.chunk_chars):
            if self.sim.faults.stall:
                return
            pcm = await self.sim.synthesizer.synthesize(piece, rate_of(self.fmt))
            audio = encode(pcm, self.fmt)
            chars = list(piece)
            dur = len(audio) / bytes_per_ms(self.fmt) / max(1, len(chars))
            alignment = {
                "chars": chars,
                "charStartTimesMs": [int(i * dur) for i in range(len(chars))],
                "charDurationsMs": [max(1, int(dur))] * len(chars),
            }
            await self._send(
                {
                    "audio": base64.b64encode(audio).decode(),
                    "isFinal": None,
                    "normalizedAlignment": alignment,
                    "alignment": alignment,
                    **self._cid(ctx),
                }
            )
            gen.first_audio_at = gen.first_audio_at or time.monotonic()
            gen.audio_bytes += len(audio)
            self.chunks_sent += 1
            drop = self.sim.faults.drop_after_chunks
            if drop is not None and self.chunks_sent >= drop:
                if self.sim.faults.drop_once:
                    self.sim.faults.drop_after_chunks = None
                transport = self.ws._req.transport if self.ws._req else None
                if transport is not None:
                    transport.abort()
                raise ConnectionError("fault: dropped")
            if self.sim.latency.realtime_factor:
                pace = len(audio) / bytes_per_ms(self.fmt) / 1000 * self.sim.latency.realtime_factor
                await asyncio.sleep(pace)

    async def _send(self, msg: dict[str, Any]) -> None:
        async with self.send_lock:
            await self.ws.send_str(json.dumps(msg))
