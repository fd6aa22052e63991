"""Guards recovery from provider failures mid-call: a Deepgram socket dropped without a close
frame is reopened and the caller's turn is still answered; an ElevenLabs socket dropped in the
middle of a reply is reopened and the rest of the reply is spoken; LLM 5xx answers are retried."""

from __future__ import annotations

import asyncio

from tests.voice_harness import VoiceRig
from voice_pipeline.sim.twilio_media import CallerScript, Utterance


async def _answered(rig: VoiceRig, call_id: str) -> list[tuple[str, str]]:
    await asyncio.sleep(0.3)
    rows = await rig.db.fetch(
        "SELECT speaker, text FROM call_transcripts WHERE call_id = $1 ORDER BY seq", call_id
    )
    return [(r["speaker"], r["text"]) for r in rows]


async def test_deepgram_drop_is_recovered(rig: VoiceRig) -> None:
    rig.stack.deepgram.faults.drop_after_s = 2.0
    rig.stack.deepgram.faults.drop_once = True
    call = await rig.call(
        CallerScript(
            utterances=[Utterance("Are you still with me")], hang_up_after=0.5, max_seconds=30
        ),
        number="+15557770401",
    )
    await rig.finish(call)
    assert len(rig.stack.deepgram.sessions) == 2  # dropped once, reopened
    rows = await _answered(rig, call["id"])
    assert ("caller", "Are you still with me") in rows
    assert any(s == "persona" and "Are you still with me" in t for s, t in rows)


async def test_elevenlabs_drop_mid_reply_is_recovered(rig: VoiceRig) -> None:
    rig.stack.elevenlabs.faults.drop_after_chunks = 3  # greeting is 2 chunks: drop in the reply
    rig.stack.elevenlabs.faults.drop_once = True
    call = await rig.call(
        CallerScript(
            utterances=[Utterance("Tell me something nice")], hang_up_after=0.5, max_seconds=40
        ),
        number="+15557770402",
    )
    log = await rig.finish(call, timeout=50)
    assert len(rig.stack.elevenlabs.sockets) == 2
    rows = await _answered(rig, call["id"])
    reply = [t for s, t in rows if s == "persona"][1]
    assert reply.endswith("figure out the next step together.")
    # The caller heard the whole reply: about 65 ms per character of it, not just the start.
    after = log.said[0][1]
    heard = sum(h.end_ms - h.start_ms for h in log.heard if h.start_ms > after)
    assert heard >= len(reply) * 65 * 0.9


async def test_llm_server_errors_are_retried(rig: VoiceRig) -> None:
    body = {"message": "upstream", "type": "server_error", "param": None, "code": "internal"}
    rig.stack.llm.faults.errors.extend([(500, body, {}), (503, body, {"retry-after": "0.05"})])
    call = await rig.call(
        CallerScript(utterances=[Utterance("Quick question")], hang_up_after=0.5, max_seconds=30),
        number="+15557770403",
    )
    await rig.finish(call)
    rows = await _answered(rig, call["id"])
    assert any(s == "persona" and "Quick question" in t for s, t in rows)


async def test_speech_recognition_down_for_good_ends_the_call_politely(rig: VoiceRig) -> None:
    from voice_pipeline.session import STT_DOWN_LINE

    rig.stack.deepgram.faults.upgrade_status = 503  # every (re)connect refused
    call = await rig.call(
        CallerScript(utterances=[Utterance("Can you hear me")], hang_up_after=None, max_seconds=40),
        number="+15557770404",
    )
    log = await rig.finish(call, timeout=50)
    assert any(kind == "server-closed" for _, kind, _ in log.events)  # we hung up, politely
    rows = await _answered(rig, call["id"])
    assert rows[-1] == ("persona", STT_DOWN_LINE)
    c = await rig.db.fetchrow("SELECT status, finalized_at FROM calls WHERE id = $1", call["id"])
    assert c["status"] == "completed" and c["finalized_at"] is not None
