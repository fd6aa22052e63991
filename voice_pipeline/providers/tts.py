"""ElevenLabs text-to-speech over the multi-context WebSocket, one socket per call.

Each persona turn is a context (``t<turn>``): clauses are sent with ``flush`` as soon as they
are complete, the turn ends with ``close_context``; a barge-in closes the context and the
session drops its late audio by context id. Audio is ``ulaw_8000`` and goes to Twilio as is.

The socket is opened when the call starts (warm before the first turn). If it drops, it is
reopened on the next send, and text of live contexts that has not yet come back as audio is
sent again, so a turn survives a dropped socket.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import websockets
from websockets.asyncio.client import ClientConnection

from voice_pipeline.logs import get_logger
from voice_pipeline.settings import Settings

log = get_logger("voice_pipeline.tts")


@dataclass(frozen=True, slots=True)
class TtsAudio:
    context: str
    audio: bytes
    chars: int  # characters of text this chunk covers (from the alignment)


@dataclass(frozen=True, slots=True)
class TtsFinal:
    context: str


TtsEvent = TtsAudio | TtsFinal


@dataclass
class _Ctx:
    text: str = ""
    covered: int = 0  # characters that came back as audio
    closed: bool = False
    opened: bool = False


class ElevenLabsTTS:
    def __init__(
        self,
        settings: Settings,
        *,
        voice_id: str,
        voice_settings: dict[str, Any],
        on_event: Callable[[TtsEvent], None],
        max_reconnects: int = 5,
    ) -> None:
        base = settings.elevenlabs_url.replace("https://", "wss://").replace("http://", "ws://")
        query = urlencode(
            {
                "model_id": settings.elevenlabs_model,
                "output_format": "ulaw_8000",
                "inactivity_timeout": 180,
                "auto_mode": "true",
            }
        )
        self.url = f"{base}/v1/text-to-speech/{voice_id}/multi-stream-input?{query}"
        self.key = settings.elevenlabs_api_key or "stand-in"
        self.voice_settings = voice_settings
        self.on_event = on_event
        self.max_reconnects = max_reconnects
        self._ws: ClientConnection | None = None
        self._contexts: dict[str, _Ctx] = {}
        self._reader: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()
        self._closed = False
        self.failed = False

    async def connect(self) -> None:
        async with self._lock:
            await self._ensure()

    async def _ensure(self) -> ClientConnection:
        if self._ws is not None and self._ws.state.name == "OPEN":
            return self._ws
        attempt = 0
        while True:
            try:
                ws = await websockets.connect(
                    self.url,
                    additional_headers={"xi-api-key": self.key},
                    max_size=16 * 2**20,
                    compression=None,  # base64 audio does not deflate; don't pay to try
                    open_timeout=5,
                    ping_interval=20,
                )
                break
            except (OSError, websockets.InvalidHandshake, TimeoutError) as err:
                attempt += 1
                if attempt > self.max_reconnects:
                    self.failed = True
                    raise ConnectionError(f"ElevenLabs unreachable: {err}") from err
                await asyncio.sleep(min(0.05 * 2**attempt, 1.0))
        reconnect = self._ws is not None
        self._ws = ws
        self._reader = asyncio.create_task(self._read(ws), name="tts-reader")
        if reconnect:
            for cid, ctx in self._contexts.items():  # resend what never came back as audio
                if ctx.closed and ctx.covered >= len(ctx.text):
                    continue
                ctx.opened = False
                rest = ctx.text[ctx.covered :]
                await self._send_ctx(ws, cid, ctx, rest, flush=True)
                if ctx.closed:
                    await ws.send(json.dumps({"context_id": cid, "close_context": True}))
            log.warning("tts_reconnected", contexts=len(self._contexts))
        return ws

    async def _send_ctx(
        self, ws: ClientConnection, cid: str, ctx: _Ctx, text: str, *, flush: bool
    ) -> None:
        if not ctx.opened:
            ctx.opened = True
            await ws.send(
                json.dumps({"text": " ", "voice_settings": self.voice_settings, "context_id": cid})
            )
        if text:
            msg: dict[str, Any] = {"text": text, "context_id": cid}
            if flush:
                msg["flush"] = True
            await ws.send(json.dumps(msg))

    async def speak(self, cid: str, text: str) -> None:
        """Synthesize ``text`` (a complete clause) in context ``cid`` now."""
        async with self._lock:
            ctx = self._contexts.setdefault(cid, _Ctx())
            ctx.text += text
            for _ in range(2):
                ws = await self._ensure()
                try:
                    await self._send_ctx(ws, cid, ctx, text, flush=True)
                    return
                except websockets.ConnectionClosed:
                    continue  # _ensure reconnects and resends the context's text

    async def end(self, cid: str) -> None:
        """No more text for ``cid``: its final event follows its last audio."""
        async with self._lock:
            ctx = self._contexts.get(cid)
            if ctx is None or ctx.closed:
                return
            ctx.closed = True
            with contextlib.suppress(websockets.ConnectionClosed, ConnectionError):
                ws = await self._ensure()
                await ws.send(json.dumps({"context_id": cid, "close_context": True}))

    cancel = end  # barge-in: the same message; late audio is dropped by the session

    async def _read(self, ws: ClientConnection) -> None:
        try:
            async for raw in ws:
                try:
                    msg = json.loads(raw)
                except (ValueError, TypeError):
                    log.warning("tts_bad_message")
                    continue
                cid = msg.get("contextId") or msg.get("context_id")
                if not isinstance(cid, str):
                    if msg.get("error"):
                        log.warning("tts_error", error=msg.get("error"))
                    continue
                ctx = self._contexts.get(cid)
                if msg.get("audio"):
                    audio = base64.b64decode(msg["audio"])
                    align = msg.get("alignment") or msg.get("normalizedAlignment") or {}
                    chars = len(align.get("chars") or [])
                    if ctx is not None:
                        ctx.covered += chars
                    self.on_event(TtsAudio(cid, audio, chars))
                if msg.get("isFinal") or msg.get("is_final"):
                    self._contexts.pop(cid, None)
                    self.on_event(TtsFinal(cid))
        except websockets.ConnectionClosed:
            pass
        finally:
            if not self._closed and any(
                not c.closed or c.covered < len(c.text) for c in self._contexts.values()
            ):
                # A turn was in progress: reconnect now rather than on the next send.
                asyncio.get_running_loop().create_task(self._reconnect_soon())

    async def _reconnect_soon(self) -> None:
        async with self._lock:
            if not self._closed:
                with contextlib.suppress(ConnectionError):
                    await self._ensure()

    async def close(self) -> None:
        self._closed = True
        ws, self._ws = self._ws, None
        if ws is not None:
            with contextlib.suppress(Exception):
                await ws.send(json.dumps({"close_socket": True}))
                await asyncio.wait_for(ws.close(), 1)
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._reader
