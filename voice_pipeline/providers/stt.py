"""Deepgram live STT for one call, through the official SDK.

Caller audio goes in untouched (``encoding=mulaw&sample_rate=8000``). Results come out as the
turn machine's events. If the socket drops mid-call it is reopened at once and the audio since
the last final result is sent again, so the utterance in progress is not lost.

Deepgram's timestamps are *stream time* on the current socket (they restart at 0 on a new
one). The session lives on its own clock, so each socket keeps a map from stream time to when
that audio was sent (which is when it arrived from Twilio): a final's last word end then says
when the caller stopped speaking, whatever the recognizer took to decide — the start of the
voice-to-voice measure.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import websockets
from deepgram import AsyncDeepgramClient
from deepgram.environment import DeepgramClientEnvironment

from voice_pipeline.logs import get_logger
from voice_pipeline.settings import Settings
from voice_pipeline.turns import Final, Interim, SpeechStarted, UtteranceEnd

log = get_logger("voice_pipeline.stt")

SttEvent = SpeechStarted | Interim | Final | UtteranceEnd
MAX_REPLAY_BYTES = 8000 * 10  # at most 10 s of audio is resent after a reconnect
STREAM_MAP_POINTS = 3000  # stream time -> session clock, one point per send (60 s of frames)


class StreamClock:
    """Stream time on one socket (seconds of audio sent) -> session clock (ms) at sending."""

    def __init__(self) -> None:
        self.sent_s = 0.0
        self._ends: deque[float] = deque(maxlen=STREAM_MAP_POINTS)  # stream time after a send
        self._at: deque[float] = deque(maxlen=STREAM_MAP_POINTS)  # session ms of that send

    def sent(self, seconds: float, at_ms: float) -> None:
        self.sent_s += seconds
        self._ends.append(self.sent_s)
        self._at.append(at_ms)

    def when(self, stream_s: float) -> float | None:
        """When the audio at ``stream_s`` was sent (None: unknown, e.g. forgotten)."""
        if not self._ends or stream_s < self._ends[0] - 1.0:
            return None
        i = bisect.bisect_left(self._ends, stream_s)
        return self._at[min(i, len(self._at) - 1)]


def deepgram_client(settings: Settings) -> AsyncDeepgramClient:
    ws = settings.deepgram_url
    http = ws.replace("wss://", "https://").replace("ws://", "http://")
    env = DeepgramClientEnvironment(base=http, production=ws, agent=ws, agent_rest=http)
    return AsyncDeepgramClient(api_key=settings.deepgram_api_key or "stand-in", environment=env)


class DeepgramSTT:
    def __init__(
        self,
        client: AsyncDeepgramClient,
        *,
        model: str,
        endpointing_ms: int,
        on_event: Callable[[SttEvent], None],
        clock: Callable[[], float],
        max_reconnects: int = 5,
    ) -> None:
        self.client = client
        self.model = model
        self.endpointing_ms = endpointing_ms
        self.on_event = on_event
        self.clock = clock  # ms on the session clock
        self.max_reconnects = max_reconnects
        self.audio_seconds = 0.0  # streamed (billed) audio
        self.reconnects = 0
        self.ready = asyncio.Event()
        self._conn: Any = None
        self._closed = False
        self._since_final = bytearray()  # replayed after a reconnect
        self._task: asyncio.Task[None] | None = None
        self.failed = asyncio.Event()
        self.last_send = time.monotonic()
        self.stream_clock = StreamClock()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="stt")

    async def send(self, audio: bytes) -> None:
        self._since_final += audio
        if len(self._since_final) > MAX_REPLAY_BYTES:
            del self._since_final[: len(self._since_final) - MAX_REPLAY_BYTES]
        conn = self._conn
        if conn is None:
            return  # reconnecting: kept in _since_final, sent when the socket is back
        try:
            await conn.send_media(audio)
        except websockets.ConnectionClosed:
            return
        self.stream_clock.sent(len(audio) / 8000, self.clock())
        self.audio_seconds += len(audio) / 8000
        self.last_send = time.monotonic()

    async def keepalive_if_idle(self) -> None:
        if self._conn is not None and time.monotonic() - self.last_send > 5:
            with contextlib.suppress(websockets.ConnectionClosed):
                await self._conn.send_keep_alive()
                self.last_send = time.monotonic()

    async def close(self) -> None:
        self._closed = True
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(conn.send_close_stream(), 1)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task

    async def _run(self) -> None:
        attempt = 0
        while not self._closed:
            try:
                async with self.client.listen.v1.connect(
                    model=self.model,
                    encoding="mulaw",
                    sample_rate=8000,
                    channels=1,
                    interim_results="true",
                    endpointing=self.endpointing_ms,
                    utterance_end_ms=1000,
                    vad_events="true",
                    punctuate="true",
                    smart_format="true",
                ) as conn:
                    self.stream_clock = StreamClock()  # stream time restarts at 0
                    if attempt:
                        replay = bytes(self._since_final)
                        for i in range(0, len(replay), 3200):  # 0.4 s per frame, fast catch-up
                            await conn.send_media(replay[i : i + 3200])
                            # Replayed audio was heard earlier than now; "now" errs late, safely.
                            self.stream_clock.sent(len(replay[i : i + 3200]) / 8000, self.clock())
                        log.warning(
                            "stt_reconnected", attempt=attempt, replayed_s=len(replay) / 8000
                        )
                    self._conn = conn
                    self.ready.set()
                    attempt = 0
                    while True:
                        self._dispatch(await conn.recv())
            except asyncio.CancelledError:
                raise
            except Exception as err:  # dropped socket, refused upgrade, timeout
                self._conn = None
                if self._closed:
                    return
                attempt += 1
                self.reconnects += 1
                if attempt > self.max_reconnects:
                    log.error("stt_gave_up", error=type(err).__name__)
                    self.failed.set()
                    return
                log.warning("stt_disconnected", error=type(err).__name__, attempt=attempt)
                await asyncio.sleep(min(0.05 * 2**attempt, 1.0))

    def _dispatch(self, msg: Any) -> None:
        kind = type(msg).__name__
        now = self.clock()
        if kind == "ListenV1Results":
            alt = msg.channel.alternatives[0] if msg.channel.alternatives else None
            text = (alt.transcript or "").strip() if alt else ""
            if msg.is_final:
                speech_end = None
                if text:
                    self._since_final.clear()
                    words = alt.words if alt is not None and alt.words else None
                    end_s = words[-1].end if words else (msg.start or 0) + (msg.duration or 0)
                    at = self.stream_clock.when(float(end_s))
                    speech_end = min(at, now) if at is not None else None
                self.on_event(Final(now, text, bool(msg.speech_final), speech_end))
            elif text:
                self.on_event(Interim(now, text))
        elif kind == "ListenV1SpeechStarted":
            self.on_event(SpeechStarted(now))
        elif kind == "ListenV1UtteranceEnd":
            self.on_event(UtteranceEnd(now))
