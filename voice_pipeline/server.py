"""The voice WebSocket server: ``/stream`` speaks Twilio Media Streams; ``/health``, ``/metrics``.

The upgrade is refused (403) unless ``x-twilio-signature`` signs ``VOICE_WS_URL`` exactly as
written in the TwiML (protocols.md §1.2; the trailing-slash variant is tried too). After
``start``, the ``stream_token`` parameter must match the call id and CallSid (minted by the
signed TwiML webhook), and the call must be claimable (known, not finished, not already
streaming); otherwise the socket is closed with 1008 and a reason. Many calls share one process
and one event loop; each call is a :class:`CallSession` with its own tasks, all gone after it.

Shutdown drains: each live call is asked to end (the persona says a short goodbye), gets up to
``drain_timeout`` seconds, then is closed; transcripts are flushed and books closed either way.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from dataclasses import asdict, dataclass
from http import HTTPStatus
from urllib.parse import urlsplit

import asyncpg
import websockets
from twilio.request_validator import RequestValidator
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.http11 import Request, Response

from voice_pipeline import stream_token
from voice_pipeline.db.session_store import BindRefused, CallContext, bind_call
from voice_pipeline.logs import bind_call as bind_log_context
from voice_pipeline.logs import get_logger
from voice_pipeline.providers.llm import LlmClient, llm_client
from voice_pipeline.providers.stt import DeepgramSTT, deepgram_client
from voice_pipeline.providers.tts import ElevenLabsTTS
from voice_pipeline.session import CallSession, SessionDeps, VoiceMetrics
from voice_pipeline.settings import Settings
from voice_pipeline.turns import TurnConfig
from voice_pipeline.twilio_stream import MAX_MESSAGE_BYTES, Start, StreamError, TwilioStreamProtocol

log = get_logger("voice_pipeline.server")

START_TIMEOUT = 10.0
SHUTDOWN_LINE = "I'm so sorry, I have to hang up now. Talk to you soon, bye!"


@dataclass
class VoiceConfig:
    idle_timeout_s: float = 15.0
    echo_guard_ms: float = 300.0
    barge_in_words: int = 2
    lead_ms: float = 120.0
    drain_timeout: float = 10.0
    goodbye_margin_s: float = 8.0  # say goodbye this long before Twilio's TimeLimit


class VoiceServer:
    def __init__(
        self, settings: Settings, pool: asyncpg.Pool, config: VoiceConfig | None = None
    ) -> None:
        self.settings = settings
        self.pool = pool
        self.config = config or VoiceConfig()
        self.metrics = VoiceMetrics()
        self.validator = RequestValidator(settings.twilio_auth_token)
        self.path = urlsplit(settings.voice_ws_url).path or "/"
        self.sessions: dict[str, CallSession] = {}
        self._server: Server | None = None
        self._warmup: asyncio.Task[int] | None = None
        self._lag: asyncio.Task[None] | None = None
        dg = deepgram_client(settings)
        tts_settings = settings
        cfg = self.config

        def make_stt(**kw: object) -> DeepgramSTT:
            return DeepgramSTT(dg, model=settings.deepgram_model, **kw)  # type: ignore[arg-type]

        def make_tts(**kw: object) -> ElevenLabsTTS:
            return ElevenLabsTTS(tts_settings, **kw)  # type: ignore[arg-type]

        def turn_config(ctx: CallContext) -> TurnConfig:
            return TurnConfig(
                greeting=ctx.greeting,
                barge_in_words=cfg.barge_in_words,
                echo_guard_ms=cfg.echo_guard_ms,
                idle_timeout_ms=cfg.idle_timeout_s * 1000,
                max_duration_ms=max(1.0, ctx.max_duration_seconds - cfg.goodbye_margin_s) * 1000,
            )

        self._llm_http = llm_client(settings)
        self.rates_version = {k: str(v) for k, v in asdict(settings.rates).items()}
        self.deps = SessionDeps(
            pool=pool,
            metrics=self.metrics,
            make_stt=make_stt,
            make_tts=make_tts,
            llm=LlmClient(self._llm_http, settings.llm_model),
            turn_config=turn_config,
            lead_ms=cfg.lead_ms,
            rates=settings.rates,
        )

    # ------------------------------------------------------------------ HTTP side
    def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        path = request.path.split("?", 1)[0]
        if path == "/health":
            return _respond(
                connection,
                200,
                json.dumps({"status": "ok", "live_calls": len(self.sessions)}),
                "application/json",
            )
        if path == "/metrics":
            return _respond(
                connection, 200, self.metrics.registry.render(), "text/plain; version=0.0.4"
            )
        if path.rstrip("/") != self.path.rstrip("/"):
            return _respond(connection, 404, "not found\n", "text/plain")
        signature = request.headers.get("x-twilio-signature", "")
        url = self.settings.voice_ws_url
        variants = (url, url[:-1] if url.endswith("/") else url + "/")
        if not signature or not any(self.validator.validate(u, {}, signature) for u in variants):
            self.metrics.bad_frames.inc("bad_signature")
            log.warning("stream_signature_invalid", has_signature=bool(signature))
            return _respond(connection, 403, "invalid X-Twilio-Signature\n", "text/plain")
        return None

    # ------------------------------------------------------------------ one stream
    async def _handler(self, ws: ServerConnection) -> None:
        proto = TwilioStreamProtocol()
        try:
            start = await asyncio.wait_for(self._await_start(ws, proto), START_TIMEOUT)
        except (TimeoutError, websockets.ConnectionClosed):
            await ws.close(1008, "no start message")
            return
        call_id = start.custom_parameters.get("call_id", "")
        token = start.custom_parameters.get("stream_token", "")
        bind_log_context(call_id=call_id or None, stream_sid=start.stream_sid)
        if not call_id or not stream_token.verify(
            self.settings.jwt_secret, call_id, start.call_sid, token
        ):
            log.warning("stream_token_invalid")
            await ws.close(1008, "invalid stream token")
            return
        if call_id in self.sessions:
            await ws.close(1008, "call already streaming")
            return
        try:
            ctx = await bind_call(
                self.pool, call_id, start.stream_sid, start.call_sid, rates=self.rates_version
            )
        except BindRefused as err:
            log.warning("stream_refused", reason=str(err))
            await ws.close(1008, str(err))
            return
        session = CallSession(self.deps, ws, proto, ctx)
        self.sessions[call_id] = session
        log.info("call_started", persona=ctx.persona_id)
        try:
            reason = await session.run()
            log.info("call_ended", reason=reason)
        finally:
            self.sessions.pop(call_id, None)

    async def _await_start(self, ws: ServerConnection, proto: TwilioStreamProtocol) -> Start:
        async for frame in ws:
            try:
                event = proto.receive(frame)
            except StreamError as err:
                self.metrics.bad_frames.inc(type(err).__name__)
                continue
            if isinstance(event, Start):
                return event
        raise websockets.ConnectionClosedOK(None, None)

    async def _watch_loop_lag(self) -> None:
        """Every call shares this loop: its lag is every call's added latency."""
        loop = asyncio.get_running_loop()
        while True:
            before = loop.time()
            await asyncio.sleep(0.05)
            self.metrics.loop_lag.observe((loop.time() - before - 0.05) * 1000)

    # ------------------------------------------------------------------ lifetime
    async def start(self, host: str, port: int, *, warm_greetings: bool = True) -> int:
        if warm_greetings:
            from voice_pipeline.greetings import warm

            self._warmup = asyncio.create_task(
                warm(self.settings, self.pool, self.deps.greeting_cache), name="greetings"
            )
        self._lag = asyncio.create_task(self._watch_loop_lag(), name="loop-lag")
        self._server = await serve(
            self._handler,
            host,
            port,
            process_request=self._process_request,
            max_size=MAX_MESSAGE_BYTES,
            compression=None,
            ping_interval=20,
            ping_timeout=20,
        )
        return self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        """Drain: every live call says goodbye and ends; then the listener closes."""
        if self._server is not None:
            self._server.close(close_connections=False)
        for session in list(self.sessions.values()):
            session.end(SHUTDOWN_LINE, "shutdown")
        drained = [s.ended.wait() for s in self.sessions.values()]
        if drained:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.gather(*drained), self.config.drain_timeout)
        if self._server is not None:
            self._server.close(close_connections=True)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 10)
        if self._warmup is not None and not self._warmup.done():
            self._warmup.cancel()
        if self._lag is not None:
            self._lag.cancel()
        await self._llm_http.close()


def _respond(connection: ServerConnection, status: int, body: str, ctype: str) -> Response:
    response = connection.respond(HTTPStatus(status), body)
    response.headers = Headers(
        [("Content-Type", ctype), ("Content-Length", str(len(body.encode())))]
    )
    return response
