"""Twilio Media Streams, sans I/O: text frames in, typed events out; outbound frames built.

A pure state machine (python-websockets style): :meth:`TwilioStreamProtocol.receive` takes one
WebSocket text frame and returns one event or raises a :class:`StreamError`; nothing here touches
a socket or a clock. Wire facts: protocols.md §1.3–1.4.

States: ``AWAIT_CONNECTED`` → ``AWAIT_START`` → ``STREAMING`` → ``STOPPED``. Twilio always sends
``connected`` first, but a ``start`` without it is accepted (the docs call ``connected`` the
first frame; being strict there would only drop calls). ``media`` before ``start`` or with
another ``streamSid`` is a :class:`ProtocolViolation`: the caller logs it and goes on.
"""

from __future__ import annotations

import base64
import binascii
import enum
import json
from dataclasses import dataclass, field
from typing import Any

MAX_MESSAGE_BYTES = 64 * 1024  # a 20 ms media frame is ~300 bytes; start with parameters < 8 KiB
MAX_PAYLOAD_BYTES = 16 * 1024  # decoded audio in one inbound media message (1 s = 8,000 bytes)


class StreamState(enum.Enum):
    AWAIT_CONNECTED = "await_connected"
    AWAIT_START = "await_start"
    STREAMING = "streaming"
    STOPPED = "stopped"


class StreamError(Exception):
    """Base class: a frame that cannot be used. The stream itself may go on."""


class MalformedMessage(StreamError):
    """Not JSON, not an object, or a required field missing or of the wrong type."""


class MessageTooLarge(StreamError):
    pass


class ProtocolViolation(StreamError):
    """A well-formed message that is not allowed now (media before start, wrong streamSid…)."""


@dataclass(frozen=True, slots=True)
class Connected:
    protocol: str
    version: str


@dataclass(frozen=True, slots=True)
class Start:
    stream_sid: str
    call_sid: str
    account_sid: str
    custom_parameters: dict[str, str]
    tracks: tuple[str, ...]
    encoding: str
    sample_rate: int
    channels: int


@dataclass(frozen=True, slots=True)
class Media:
    sequence: int
    chunk: int
    timestamp_ms: int
    payload: bytes
    track: str


@dataclass(frozen=True, slots=True)
class Dtmf:
    sequence: int
    digit: str


@dataclass(frozen=True, slots=True)
class Mark:
    sequence: int
    name: str


@dataclass(frozen=True, slots=True)
class Stop:
    sequence: int
    call_sid: str


@dataclass(frozen=True, slots=True)
class Unknown:
    event: str


Event = Connected | Start | Media | Dtmf | Mark | Stop | Unknown


@dataclass
class TwilioStreamProtocol:
    max_message_bytes: int = MAX_MESSAGE_BYTES
    max_payload_bytes: int = MAX_PAYLOAD_BYTES
    state: StreamState = StreamState.AWAIT_CONNECTED
    stream_sid: str | None = None
    call_sid: str | None = None
    last_sequence: int = 0
    gaps: int = 0  # sequence numbers skipped or repeated (reordering is not expected)
    _out_prefix: str = field(default="", repr=False)

    # ------------------------------------------------------------------ inbound
    def receive(self, frame: str | bytes) -> Event:
        if isinstance(frame, bytes):
            raise MalformedMessage("binary frame; Twilio sends JSON text frames")
        if len(frame) > self.max_message_bytes:
            raise MessageTooLarge(f"{len(frame)} bytes > {self.max_message_bytes}")
        try:
            msg = json.loads(frame)
        except ValueError as err:
            raise MalformedMessage(f"not JSON: {err}") from None
        if not isinstance(msg, dict):
            raise MalformedMessage("not a JSON object")
        event = msg.get("event")
        if not isinstance(event, str):
            raise MalformedMessage("missing event")
        if self.state is StreamState.STOPPED:
            raise ProtocolViolation(f"{event} after stop")
        if event == "media":  # the hot path first
            return self._media(msg)
        if event == "connected":
            if self.state is not StreamState.AWAIT_CONNECTED:
                raise ProtocolViolation("connected twice")
            self.state = StreamState.AWAIT_START
            return Connected(str(msg.get("protocol", "")), str(msg.get("version", "")))
        if event == "start":
            return self._start(msg)
        if self.state is not StreamState.STREAMING:
            raise ProtocolViolation(f"{event} before start")
        self._check_sid(msg)
        seq = self._sequence(msg)
        if event == "mark":
            name = _obj(msg, "mark").get("name")
            if not isinstance(name, str):
                raise MalformedMessage("mark.name missing")
            return Mark(seq, name)
        if event == "dtmf":
            digit = _obj(msg, "dtmf").get("digit")
            if not isinstance(digit, str) or len(digit) != 1:
                raise MalformedMessage("dtmf.digit missing")
            return Dtmf(seq, digit)
        if event == "stop":
            self.state = StreamState.STOPPED
            return Stop(seq, str(_obj(msg, "stop").get("callSid", self.call_sid or "")))
        return Unknown(event)

    def _start(self, msg: dict[str, Any]) -> Start:
        if self.state is StreamState.STREAMING:
            raise ProtocolViolation("start twice")
        start = _obj(msg, "start")
        sid = start.get("streamSid") or msg.get("streamSid")
        call_sid = start.get("callSid")
        if not isinstance(sid, str) or not sid or not isinstance(call_sid, str) or not call_sid:
            raise MalformedMessage("start.streamSid and start.callSid are required")
        params = start.get("customParameters") or {}
        if not isinstance(params, dict):
            raise MalformedMessage("start.customParameters must be an object")
        fmt = start.get("mediaFormat") or {}
        if not isinstance(fmt, dict):
            raise MalformedMessage("start.mediaFormat must be an object")
        self.state = StreamState.STREAMING
        self.stream_sid = sid
        self.call_sid = call_sid
        self.last_sequence = self._sequence(msg)
        # Outbound frames all start the same way; build the prefix once.
        self._out_prefix = '{"streamSid":' + json.dumps(sid) + ',"event":'
        return Start(
            stream_sid=sid,
            call_sid=call_sid,
            account_sid=str(start.get("accountSid", "")),
            custom_parameters={str(k): str(v) for k, v in params.items()},
            tracks=tuple(str(t) for t in start.get("tracks") or ()),
            encoding=str(fmt.get("encoding", "audio/x-mulaw")),
            sample_rate=int(fmt.get("sampleRate", 8000)),
            channels=int(fmt.get("channels", 1)),
        )

    def _media(self, msg: dict[str, Any]) -> Media:
        if self.state is not StreamState.STREAMING:
            raise ProtocolViolation("media before start")
        self._check_sid(msg)
        media = _obj(msg, "media")
        payload = media.get("payload")
        if not isinstance(payload, str):
            raise MalformedMessage("media.payload missing")
        if len(payload) > self.max_payload_bytes * 4 // 3 + 4:
            raise MessageTooLarge("media payload too large")
        try:
            audio = base64.b64decode(payload, validate=True)
        except (binascii.Error, ValueError):
            raise MalformedMessage("media.payload is not base64") from None
        try:
            chunk = int(media.get("chunk", 0))
            timestamp = int(media.get("timestamp", 0))
        except (TypeError, ValueError):
            raise MalformedMessage("media.chunk/timestamp must be numeric strings") from None
        return Media(
            self._sequence(msg), chunk, timestamp, audio, str(media.get("track", "inbound"))
        )

    def _check_sid(self, msg: dict[str, Any]) -> None:
        if msg.get("streamSid") != self.stream_sid:
            raise ProtocolViolation("message for another streamSid")

    def _sequence(self, msg: dict[str, Any]) -> int:
        raw = msg.get("sequenceNumber")
        try:
            seq = int(raw) if raw is not None else self.last_sequence + 1
        except (TypeError, ValueError):
            raise MalformedMessage("sequenceNumber must be a numeric string") from None
        if seq != self.last_sequence + 1 and self.last_sequence:
            self.gaps += 1
        self.last_sequence = max(self.last_sequence, seq)
        return seq

    # ------------------------------------------------------------------ outbound
    def media(self, payload: bytes) -> str:
        self._require_streaming()
        return (
            self._out_prefix
            + '"media","media":{"payload":"'
            + base64.b64encode(payload).decode()
            + '"}}'
        )

    def mark(self, name: str) -> str:
        self._require_streaming()
        return self._out_prefix + '"mark","mark":{"name":' + json.dumps(name) + "}}"

    def clear(self) -> str:
        self._require_streaming()
        return self._out_prefix + '"clear"}'

    def _require_streaming(self) -> None:
        if self.stream_sid is None:
            raise ProtocolViolation("no stream started")


def _obj(msg: dict[str, Any], key: str) -> dict[str, Any]:
    value = msg.get(key)
    if not isinstance(value, dict):
        raise MalformedMessage(f"{key} must be an object")
    return value
