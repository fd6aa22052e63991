"""The Twilio stand-in: REST ``Calls`` resource, call lifecycle, signed webhooks.

Speaks protocols.md §1.6–1.9: Basic auth, form bodies, Twilio's JSON shapes and error bodies
(``{"code", "message", "more_info", "status"}``); each created call rings, is answered (or is
busy / unanswered / failed, per number), fetches its TwiML with a signed POST, and reports
``initiated``, ``ringing``, ``answered`` (as ``CallStatus=in-progress``) and ``completed``
status callbacks, signed, with ``SequenceNumber`` from 0 and an RFC 2822 ``Timestamp``,
retried when our server fails. A call ends on ``Status=completed`` over REST, on its
``TimeLimit``, on ``<Hangup/>``, or when the media stream's owner ends it.

Choices where protocols.md is silent (following the SDK and Twilio's docs):
- The ``answered`` callback and the TwiML fetch are sent concurrently, so the server under test
  must not depend on their order (Twilio gives no ordering guarantee either).
- Missing ``Url``/``Twiml`` → 400 code 21205; missing ``To``/``From`` → 21201/21213; a ``To`` that
  is neither E.164 nor ``sip:``/``client:`` → 21211 with Twilio's message.
- Callback retries: up to ``callback_attempts`` tries on connection errors and 5xx, doubling
  from ``callback_backoff`` seconds.

The media WebSocket leg (``<Connect><Stream>``) is started through :attr:`TwilioSim.on_stream`,
so this module stays independent of the voice pipeline.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import math
import re
import secrets
import time
import xml.etree.ElementTree as ET
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Any

import aiohttp
from aiohttp import web
from twilio.request_validator import RequestValidator

API_VERSION = "2010-04-01"
E164 = re.compile(r"^\+[1-9]\d{6,14}$")
TERMINAL = frozenset({"completed", "busy", "no-answer", "failed", "canceled"})


def _rfc2822(ts: float | None) -> str | None:
    if ts is None:
        return None
    return format_datetime(datetime.fromtimestamp(ts, UTC))


def twilio_error(status: int, code: int | None, message: str) -> web.Response:
    body: dict[str, Any] = {"message": message, "status": status}
    if code is not None:
        body["code"] = code
        body["more_info"] = f"https://www.twilio.com/docs/errors/{code}"
    return web.json_response(body, status=status)


@dataclass
class StreamRequest:
    """What ``<Connect><Stream>`` asked for: the URL and its ``<Parameter>``s."""

    url: str
    parameters: dict[str, str]
    status_callback: str | None = None


@dataclass
class SimCall:
    sid: str
    account_sid: str
    to: str
    from_: str
    url: str | None
    twiml: str | None
    method: str
    status_callback: str | None
    status_events: list[str]
    time_limit: int
    ring_timeout: int
    machine_detection: str | None
    status: str = "queued"
    created: float = field(default_factory=time.time)
    answered_at: float | None = None
    ended_at: float | None = None
    sequence: int = 0
    callbacks: list[tuple[str, int | None]] = field(default_factory=list)  # (CallStatus, HTTP)
    stream: StreamRequest | None = None
    twiml_fetched: str | None = None
    ended: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None
    stream_task: asyncio.Task[None] | None = None

    @property
    def duration(self) -> int:
        if self.answered_at is None:
            return 0
        end = self.ended_at or time.time()
        return max(0, math.ceil(end - self.answered_at))

    def resource(self) -> dict[str, Any]:
        uri = f"/{API_VERSION}/Accounts/{self.account_sid}/Calls/{self.sid}"
        return {
            "sid": self.sid,
            "account_sid": self.account_sid,
            "parent_call_sid": None,
            "to": self.to,
            "to_formatted": self.to,
            "from": self.from_,
            "from_formatted": self.from_,
            "phone_number_sid": "PN" + "0" * 32,
            "status": self.status,
            "start_time": _rfc2822(self.answered_at),
            "end_time": _rfc2822(self.ended_at),
            "duration": str(self.duration) if self.status in TERMINAL else None,
            "price": None,
            "price_unit": "USD",
            "direction": "outbound-api",
            "answered_by": "human" if self.machine_detection and self.answered_at else None,
            "api_version": API_VERSION,
            "forwarded_from": None,
            "group_sid": None,
            "caller_name": None,
            "queue_time": "0",
            "trunk_sid": None,
            "date_created": _rfc2822(self.created),
            "date_updated": _rfc2822(time.time()),
            "uri": uri + ".json",
            "subresource_uris": {
                name: f"{uri}/{name.title().replace('_', '')}.json"
                for name in (
                    "notifications",
                    "recordings",
                    "payments",
                    "events",
                    "siprec",
                    "streams",
                    "transcriptions",
                    "user_defined_message_subscriptions",
                    "user_defined_messages",
                )
            },
        }


@dataclass
class TwilioFaults:
    """Injectable failures of the REST API (each ``create_error`` is used once)."""

    create_errors: list[tuple[int, int | None, str]] = field(default_factory=list)
    # Delay the 201 *after* the call was created: a client that times out has still placed it.
    create_delay: float = 0.0


StreamHandler = Callable[[SimCall, StreamRequest], Awaitable[None]]


class TwilioSim:
    def __init__(
        self,
        account_sid: str,
        auth_token: str,
        *,
        ring_delay: float = 0.05,
        outcomes: dict[str, str] | None = None,
        callback_attempts: int = 4,
        callback_backoff: float = 0.1,
        callback_delay: float = 0.0,
    ) -> None:
        self.account_sid = account_sid
        self.auth_token = auth_token
        self.validator = RequestValidator(auth_token)
        self.ring_delay = ring_delay
        # To number → "answer" (default) | "busy" | "no-answer" | "failed"
        self.outcomes = outcomes or {}
        self.callback_attempts = callback_attempts
        self.callback_backoff = callback_backoff
        self.callback_delay = callback_delay  # webhook latency before each status callback
        self.faults = TwilioFaults()
        self.calls: dict[str, SimCall] = {}
        self.on_stream: StreamHandler | None = None
        self.app = web.Application()
        prefix = f"/{API_VERSION}/Accounts/{{account}}"
        self.app.router.add_post(f"{prefix}/Calls.json", self._create)
        self.app.router.add_get(f"{prefix}/Calls/{{sid}}.json", self._fetch)
        self.app.router.add_post(f"{prefix}/Calls/{{sid}}.json", self._update)
        self.app.on_startup.append(self._open)
        self.app.on_cleanup.append(self._close)
        self._http: aiohttp.ClientSession | None = None

    # ------------------------------------------------------------------ lifecycle
    async def _open(self, _app: web.Application) -> None:
        self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=15))

    async def _close(self, _app: web.Application) -> None:
        for call in self.calls.values():
            if call.task and not call.task.done():
                call.task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await call.task
        if self._http:
            await self._http.close()

    # ------------------------------------------------------------------ REST
    def _authorized(self, request: web.Request) -> bool:
        header = request.headers.get("Authorization", "")
        if not header.startswith("Basic "):
            return False
        try:
            user, _, password = base64.b64decode(header[6:]).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            return False
        return (
            secrets.compare_digest(user, self.account_sid)
            and secrets.compare_digest(password, self.auth_token)
            and request.match_info["account"] == self.account_sid
        )

    async def _create(self, request: web.Request) -> web.Response:
        if not self._authorized(request):
            return twilio_error(401, 20003, "Authenticate")
        if self.faults.create_errors:
            return twilio_error(*self.faults.create_errors.pop(0))
        form = await request.post()
        to, from_ = form.get("To"), form.get("From")
        if not to:
            return twilio_error(400, 21201, "No 'To' number is specified")
        if not from_:
            return twilio_error(400, 21213, "No 'From' number is specified")
        if not (E164.match(str(to)) or str(to).startswith(("sip:", "client:"))):
            return twilio_error(400, 21211, f"The 'To' number {to} is not a valid phone number.")
        url, twiml = form.get("Url"), form.get("Twiml")
        if not url and not twiml and not form.get("ApplicationSid"):
            return twilio_error(400, 21205, "Url parameter is required.")
        if twiml and len(str(twiml)) > 4000:
            return twilio_error(400, 21232, "Twiml exceeds 4000 characters.")
        call = SimCall(
            sid="CA" + secrets.token_hex(16),
            account_sid=self.account_sid,
            to=str(to),
            from_=str(from_),
            url=str(url) if url else None,
            twiml=str(twiml) if twiml and not url else None,
            method=str(form.get("Method", "POST")).upper(),
            status_callback=str(form["StatusCallback"]) if form.get("StatusCallback") else None,
            status_events=[str(e) for e in form.getall("StatusCallbackEvent", [])] or ["completed"],
            time_limit=int(str(form.get("TimeLimit", "14400"))),
            ring_timeout=int(str(form.get("Timeout", "60"))),
            machine_detection=str(form["MachineDetection"])
            if form.get("MachineDetection")
            else None,
        )
        self.calls[call.sid] = call
        call.task = asyncio.create_task(self._run_call(call), name=f"sim-call-{call.sid}")
        if self.faults.create_delay:  # the call exists; only the answer is late (or lost)
            await asyncio.sleep(self.faults.create_delay)
        return web.json_response(call.resource(), status=201)

    def _find(self, request: web.Request) -> SimCall | None:
        return self.calls.get(request.match_info["sid"])

    async def _fetch(self, request: web.Request) -> web.Response:
        if not self._authorized(request):
            return twilio_error(401, 20003, "Authenticate")
        call = self._find(request)
        if call is None:
            return twilio_error(404, 20404, f"The requested resource {request.path} was not found")
        return web.json_response(call.resource())

    async def _update(self, request: web.Request) -> web.Response:
        if not self._authorized(request):
            return twilio_error(401, 20003, "Authenticate")
        call = self._find(request)
        if call is None:
            return twilio_error(404, 20404, f"The requested resource {request.path} was not found")
        form = await request.post()
        status = form.get("Status")
        if status == "completed":
            self.end(call)
        elif status == "canceled":
            if call.status in ("queued", "ringing"):
                self.end(call, "canceled")
        elif status is not None:
            return twilio_error(400, 21218, f"Invalid Status {status}")
        return web.json_response(call.resource())

    # ------------------------------------------------------------------ call lifecycle
    def end(self, call: SimCall, status: str = "completed") -> None:
        """End the call now (hang-up); the lifecycle task sends the final callback."""
        if call.ended.is_set():
            return
        call.ended_at = time.time()
        call.status = status if call.answered_at or status != "completed" else "canceled"
        call.ended.set()

    async def _run_call(self, call: SimCall) -> None:
        callbacks: list[asyncio.Task[None]] = []

        def report(event: str, status: str, **extra: str) -> None:
            if event in call.status_events and call.status_callback:
                params = self._call_params(call, status)
                params.update(extra)
                callbacks.append(asyncio.create_task(self._post_callback(call, params)))

        call.status = "queued"
        report("initiated", "initiated")
        await asyncio.sleep(0)
        call.status = "ringing"
        report("ringing", "ringing")
        outcome = self.outcomes.get(call.to, "answer")
        try:
            await asyncio.wait_for(call.ended.wait(), self.ring_delay)
        except TimeoutError:
            pass
        if call.ended.is_set():  # canceled while ringing
            report("completed", call.status, CallDuration="0", Duration="0")
        elif outcome != "answer":
            call.status = outcome
            call.ended_at = time.time()
            call.ended.set()
            report("completed", outcome, CallDuration="0", Duration="0")
        else:
            call.status = "in-progress"
            call.answered_at = time.time()
            extra = {"AnsweredBy": "human"} if call.machine_detection else {}
            report("answered", "in-progress", **extra)
            await self._connect(call)
            try:
                await asyncio.wait_for(call.ended.wait(), call.time_limit)
            except TimeoutError:
                self.end(call)
            report(
                "completed",
                call.status,
                CallDuration=str(call.duration),
                Duration=str(math.ceil(call.duration / 60)),
            )
        if callbacks:
            await asyncio.gather(*callbacks, return_exceptions=True)

    async def _connect(self, call: SimCall) -> None:
        """Fetch and run the call's TwiML."""
        twiml = call.twiml
        if call.url:
            params = self._call_params(call, "in-progress")
            text = await self._signed_request(call.url, params, method=call.method)
            if text is None:
                self.end(call, "failed")
                return
            twiml = text
        call.twiml_fetched = twiml
        try:
            root = ET.fromstring(twiml or "")
        except ET.ParseError:
            self.end(call, "failed")  # Twilio: 12100 document parse failure, call ends
            return
        for verb in root:
            if verb.tag == "Hangup" or verb.tag == "Reject":
                self.end(call)
                return
            if verb.tag == "Connect":
                stream = verb.find("Stream")
                if stream is not None and stream.get("url"):
                    call.stream = StreamRequest(
                        url=stream.get("url", ""),
                        parameters={
                            p.get("name", ""): p.get("value", "")
                            for p in stream.findall("Parameter")
                        },
                        status_callback=stream.get("statusCallback"),
                    )
                    if self.on_stream is not None:
                        call.stream_task = asyncio.create_task(self._run_stream(call, call.stream))
                    return

    async def _run_stream(self, call: SimCall, stream: StreamRequest) -> None:
        assert self.on_stream is not None
        try:
            await self.on_stream(call, stream)
        finally:
            # <Connect> ends when the stream ends; with no verb after it, so does the call.
            self.end(call)

    def _call_params(self, call: SimCall, status: str) -> dict[str, str]:
        return {
            "AccountSid": call.account_sid,
            "ApiVersion": API_VERSION,
            "CallSid": call.sid,
            "CallStatus": status,
            "Called": call.to,
            "Caller": call.from_,
            "Direction": "outbound-api",
            "From": call.from_,
            "To": call.to,
        }

    async def _post_callback(self, call: SimCall, params: dict[str, str]) -> None:
        assert call.status_callback
        params = {
            **params,
            "CallbackSource": "call-progress-events",
            "SequenceNumber": str(call.sequence),
            "Timestamp": _rfc2822(time.time()) or "",
        }
        call.sequence += 1
        if self.callback_delay:
            await asyncio.sleep(self.callback_delay)
        status = await self._signed_post_status(call.status_callback, params)
        call.callbacks.append((params["CallStatus"], status))

    async def _signed_request(
        self, url: str, params: dict[str, str], method: str = "POST"
    ) -> str | None:
        """Signed webhook request with retries; the body on 2xx, else None."""
        assert self._http is not None
        signature = self.validator.compute_signature(url, params if method == "POST" else {})
        for attempt in range(self.callback_attempts):
            try:
                async with self._http.request(
                    method,
                    url,
                    data=params if method == "POST" else None,
                    params=None if method == "POST" else params,
                    headers={"X-Twilio-Signature": signature},
                ) as resp:
                    if resp.status < 400:
                        return await resp.text()
                    if resp.status < 500:
                        return None
            except (aiohttp.ClientError, TimeoutError):
                pass
            await asyncio.sleep(self.callback_backoff * 2**attempt)
        return None

    async def _signed_post_status(self, url: str, params: dict[str, str]) -> int | None:
        assert self._http is not None
        signature = self.validator.compute_signature(url, params)
        last: int | None = None
        for attempt in range(self.callback_attempts):
            try:
                async with self._http.post(
                    url, data=params, headers={"X-Twilio-Signature": signature}
                ) as resp:
                    last = resp.status
                    if resp.status < 500:
                        return resp.status
            except (aiohttp.ClientError, TimeoutError):
                last = None
            await asyncio.sleep(self.callback_backoff * 2**attempt)
        return last

    async def wait_ended(self, sid: str, timeout: float = 10.0) -> SimCall:
        call = self.calls[sid]
        await asyncio.wait_for(call.ended.wait(), timeout)
        if call.task:
            await asyncio.wait_for(asyncio.shield(call.task), timeout)
        return call
