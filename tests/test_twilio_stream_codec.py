"""Guards the sans-I/O Twilio stream codec: states, exact inbound parsing, outbound frame
shapes, and that arbitrary input only ever raises its own StreamError hierarchy."""

from __future__ import annotations

import base64
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from voice_pipeline.twilio_stream import (
    Connected,
    Dtmf,
    MalformedMessage,
    Mark,
    Media,
    MessageTooLarge,
    ProtocolViolation,
    Start,
    Stop,
    StreamError,
    StreamState,
    TwilioStreamProtocol,
    Unknown,
)

SID = "MZ" + "1" * 32
START = {
    "event": "start",
    "sequenceNumber": "1",
    "streamSid": SID,
    "start": {
        "accountSid": "AC1",
        "streamSid": SID,
        "callSid": "CA1",
        "tracks": ["inbound"],
        "customParameters": {"call_id": "call_1", "stream_token": "tok"},
        "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
    },
}


def media(seq: int, payload: bytes = b"\xff" * 160, sid: str = SID) -> str:
    return json.dumps(
        {
            "event": "media",
            "sequenceNumber": str(seq),
            "streamSid": sid,
            "media": {
                "track": "inbound",
                "chunk": str(seq - 1),
                "timestamp": str(20 * seq),
                "payload": base64.b64encode(payload).decode(),
            },
        }
    )


def started() -> TwilioStreamProtocol:
    p = TwilioStreamProtocol()
    p.receive(json.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"}))
    p.receive(json.dumps(START))
    return p


def test_happy_path_events_and_state() -> None:
    p = TwilioStreamProtocol()
    assert p.state is StreamState.AWAIT_CONNECTED
    assert p.receive('{"event":"connected","protocol":"Call","version":"1.0.0"}') == Connected(
        "Call", "1.0.0"
    )
    start = p.receive(json.dumps(START))
    assert isinstance(start, Start) and p.state is StreamState.STREAMING
    assert start.custom_parameters == {"call_id": "call_1", "stream_token": "tok"}
    assert (start.call_sid, start.sample_rate, start.encoding) == ("CA1", 8000, "audio/x-mulaw")
    m = p.receive(media(2, b"\x01\x02\x03"))
    assert m == Media(2, 1, 40, b"\x01\x02\x03", "inbound")
    assert p.receive(
        json.dumps(
            {
                "event": "dtmf",
                "streamSid": SID,
                "sequenceNumber": "3",
                "dtmf": {"track": "inbound_track", "digit": "7"},
            }
        )
    ) == Dtmf(3, "7")
    assert p.receive(
        json.dumps(
            {"event": "mark", "sequenceNumber": "4", "streamSid": SID, "mark": {"name": "t1:0"}}
        )
    ) == Mark(4, "t1:0")
    assert p.receive(
        json.dumps({"event": "future", "streamSid": SID, "sequenceNumber": "5"})
    ) == Unknown("future")
    assert p.gaps == 0
    assert p.receive(
        json.dumps(
            {
                "event": "stop",
                "sequenceNumber": "6",
                "streamSid": SID,
                "stop": {"accountSid": "AC1", "callSid": "CA1"},
            }
        )
    ) == Stop(6, "CA1")
    assert p.state is StreamState.STOPPED
    with pytest.raises(ProtocolViolation):
        p.receive(media(7))


def test_outbound_frames_are_exactly_twilios_shapes() -> None:
    p = started()
    assert json.loads(p.media(b"\xff\x00")) == {
        "streamSid": SID,
        "event": "media",
        "media": {"payload": base64.b64encode(b"\xff\x00").decode()},
    }
    assert json.loads(p.mark('t"1:2')) == {
        "streamSid": SID,
        "event": "mark",
        "mark": {"name": 't"1:2'},
    }
    assert json.loads(p.clear()) == {"streamSid": SID, "event": "clear"}
    with pytest.raises(ProtocolViolation):
        TwilioStreamProtocol().clear()


@pytest.mark.parametrize(
    ("frame", "error"),
    [
        ("not json", MalformedMessage),
        ("[1, 2]", MalformedMessage),
        ('{"no": "event"}', MalformedMessage),
        (b"\x00binary", MalformedMessage),
        ('{"event":"start","start":{"streamSid":"MZ1"}}', MalformedMessage),  # no callSid
        (
            '{"event":"start","start":{"streamSid":"MZ1","callSid":"CA1","customParameters":[1]}}',
            MalformedMessage,
        ),
        ("x" * 70_000, MessageTooLarge),
    ],
)
def test_malformed_frames_raise_malformed(frame: str | bytes, error: type[StreamError]) -> None:
    with pytest.raises(error):
        TwilioStreamProtocol().receive(frame)


def test_out_of_order_and_foreign_frames_are_violations_not_crashes() -> None:
    p = TwilioStreamProtocol()
    with pytest.raises(ProtocolViolation, match="media before start"):
        p.receive(media(2))
    with pytest.raises(ProtocolViolation, match="mark before start"):
        p.receive(json.dumps({"event": "mark", "streamSid": SID, "mark": {"name": "x"}}))
    assert isinstance(p.receive(json.dumps(START)), Start)  # start without connected is fine
    with pytest.raises(ProtocolViolation, match="start twice"):
        p.receive(json.dumps(START))
    with pytest.raises(ProtocolViolation, match="another streamSid"):
        p.receive(media(2, sid="MZother"))
    with pytest.raises(MalformedMessage, match="not base64"):
        p.receive(media(2).replace(base64.b64encode(b"\xff" * 160).decode(), "@@@@"))
    with pytest.raises(MessageTooLarge):
        p.receive(media(2, b"\x00" * 20_000))
    assert isinstance(p.receive(media(5)), Media)  # still streaming after all that
    assert p.gaps == 1  # 1 → 5 skipped numbers: counted, not fatal


@given(st.text(max_size=300) | st.binary(max_size=300))
def test_any_input_raises_only_stream_errors(data: str | bytes) -> None:
    p = started()
    try:
        p.receive(data)
    except StreamError:
        pass


@given(
    st.dictionaries(
        st.sampled_from(
            ["event", "streamSid", "sequenceNumber", "media", "mark", "dtmf", "start", "stop"]
        ),
        st.none()
        | st.integers()
        | st.text(max_size=20)
        | st.dictionaries(st.text(max_size=10), st.text(max_size=10), max_size=3),
    )
)
def test_any_json_object_raises_only_stream_errors(msg: dict) -> None:
    for p in (TwilioStreamProtocol(), started()):
        try:
            p.receive(json.dumps(msg))
        except StreamError:
            pass
