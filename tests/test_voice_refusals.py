"""Guards the voice server's door: forged or missing signatures refused on upgrade (403), bad
stream tokens, unknown, finished and duplicate calls refused after `start` (1008), malformed,
oversized and out-of-order frames survived without harming another live call, /health and
/metrics served."""

from __future__ import annotations

import asyncio
import json

import aiohttp
import pytest
import websockets
from twilio.request_validator import RequestValidator

from tests.voice_harness import TOKEN, VoiceRig
from voice_pipeline import stream_token
from voice_pipeline.sim.twilio_media import CallerScript, Utterance


def signed(rig: VoiceRig) -> dict[str, str]:
    url = rig.settings.voice_ws_url
    return {"x-twilio-signature": RequestValidator(TOKEN).compute_signature(url, {})}


def start_msg(call_id: str, token: str, call_sid: str = "CA" + "7" * 32) -> str:
    return json.dumps(
        {
            "event": "start",
            "sequenceNumber": "1",
            "streamSid": "MZ" + "9" * 32,
            "start": {
                "accountSid": "AC",
                "streamSid": "MZ" + "9" * 32,
                "callSid": call_sid,
                "tracks": ["inbound"],
                "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
                "customParameters": {"call_id": call_id, "stream_token": token},
            },
        }
    )


async def closed_with(rig: VoiceRig, frames: list[str]) -> tuple[int | None, str]:
    async with websockets.connect(rig.settings.voice_ws_url, additional_headers=signed(rig)) as ws:
        for f in frames:
            await ws.send(f)
        with pytest.raises(websockets.ConnectionClosed):
            while True:
                await asyncio.wait_for(ws.recv(), 5)
    return ws.close_code, ws.close_reason


async def test_forged_or_missing_signature_is_refused_on_upgrade(rig: VoiceRig) -> None:
    for headers in (
        {},
        {"x-twilio-signature": "Zm9yZ2Vk"},
        {
            "x-twilio-signature": RequestValidator("other-token").compute_signature(
                rig.settings.voice_ws_url, {}
            )
        },
    ):
        with pytest.raises(websockets.InvalidStatus) as info:
            async with websockets.connect(rig.settings.voice_ws_url, additional_headers=headers):
                pass
        assert info.value.response.status_code == 403
    with pytest.raises(websockets.InvalidStatus) as info:
        async with websockets.connect(
            rig.settings.voice_ws_url.replace("/stream", "/other"), additional_headers=signed(rig)
        ):
            pass
    assert info.value.response.status_code == 404


async def test_bad_tokens_unknown_and_finished_calls_are_refused(rig: VoiceRig) -> None:
    secret = rig.settings.jwt_secret
    sid = "CA" + "7" * 32
    assert await closed_with(rig, [start_msg("call_x", "wrong")]) == (1008, "invalid stream token")
    ghost = stream_token.mint(secret, "call_ghost", sid)
    assert await closed_with(rig, [start_msg("call_ghost", ghost)]) == (1008, "unknown call")
    uid = await rig.db.fetchval("SELECT id FROM users LIMIT 1")
    done = await rig.db.fetchval(
        "INSERT INTO calls (user_id, persona_id, phone_number, status, finalized_at) "
        "VALUES ($1, 'brad', '+1555', 'completed', now()) RETURNING id",
        uid,
    )
    code, reason = await closed_with(rig, [start_msg(done, stream_token.mint(secret, done, sid))])
    assert code == 1008 and "finished or already streaming" in reason
    # Garbage before the start is skipped, not fatal: the start is still judged.
    assert await closed_with(
        rig, ["garbage", '{"event":"media"}', "[]", start_msg("c", "bad")]
    ) == (1008, "invalid stream token")


JUNK = [
    "not json",
    "[1, 2, 3]",
    '{"event": "media", "streamSid": "MZwrong", "media": {"payload": "AA=="}}',
    '{"event": "media", "streamSid": "{streamSid}", "media": {"payload": "@@not base64@@"}}',
    '{"event": "mark", "streamSid": "{streamSid}", "mark": {"name": "t999:0"}}',
    '{"event": "mark", "streamSid": "{streamSid}", "mark": {"name": 5}}',
    '{"event": "dtmf", "streamSid": "{streamSid}", "dtmf": {}}',
    '{"event": "surprise", "streamSid": "{streamSid}"}',
]


async def test_a_second_stream_for_a_live_call_is_refused_and_garbage_harms_no_one(
    rig: VoiceRig,
) -> None:
    hello = CallerScript(
        utterances=[Utterance("Hello there Brad")],
        hang_up_after=0.8,
        max_seconds=25,
        raw=[(4.0, j) for j in JUNK],
    )
    oversized = CallerScript(
        hang_up_after=None,
        max_seconds=25,
        raw=[(4.5, '{"event": "x", "pad": "' + "a" * 70_000 + '"}')],
    )
    call = await rig.call(hello, number="+15557770201")
    other = await rig.call(oversized, number="+15557770202")
    for _ in range(200):
        if call["id"] in rig.voice.sessions:
            break
        await asyncio.sleep(0.05)
    sim_call = rig.stack.twilio.calls[call["twilio_call_sid"]]
    token = stream_token.mint(rig.settings.jwt_secret, call["id"], sim_call.sid)
    code, reason = await closed_with(rig, [start_msg(call["id"], token, sim_call.sid)])
    assert code == 1008 and reason in (
        "call already streaming",
        "call finished or already streaming",
    )
    other_log = await rig.finish(other)
    assert other_log.close_code == 1009  # the oversized frame ended that stream only …
    log = await rig.finish(call)
    assert log.errors == []  # … this one carried on through the junk and was answered
    assert [t for _, _, t in log.said] == ["Hello there Brad"]
    await asyncio.sleep(0.3)
    rows = await rig.db.fetch(
        "SELECT speaker, text FROM call_transcripts WHERE call_id = $1 ORDER BY seq", call["id"]
    )
    assert [r["speaker"] for r in rows][:3] == ["persona", "caller", "persona"]
    assert "Hello there Brad" in rows[2]["text"]
    # Six of the eight are refused by the codec (a mark of an unknown turn and an unknown event
    # are well-formed and ignored).
    bad = rig.voice.metrics.bad_frames.values
    assert bad[("MalformedMessage",)] == 5 and bad[("ProtocolViolation",)] == 1


async def test_health_and_metrics(rig: VoiceRig) -> None:
    base = rig.settings.voice_ws_url.replace("ws://", "http://").replace("/stream", "")
    async with aiohttp.ClientSession() as http:
        async with http.get(base + "/health") as r:
            assert r.status == 200 and (await r.json())["status"] == "ok"
        async with http.get(base + "/metrics") as r:
            text = await r.text()
            assert "callmeback_voice_live_calls" in text and "callmeback_voice_stage_ms" in text
