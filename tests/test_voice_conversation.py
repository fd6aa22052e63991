"""Guards a whole phone conversation end to end: a call triggered through the API, the Twilio
stand-in dialling and streaming, greeting first, two caller turns answered, transcript and
per-turn latency rows, whole 20 ms frames with marks, books closed, and no task left behind."""

from __future__ import annotations

import asyncio

from tests.voice_harness import VoiceRig, call_tasks
from voice_pipeline.sim.twilio_media import CallerScript, Utterance


async def test_two_turn_conversation_is_transcribed_timed_and_billed(rig: VoiceRig) -> None:
    script = CallerScript(
        utterances=[Utterance("What should I train today?"), Utterance("Legs sound good")],
        hang_up_after=0.5,
        max_seconds=40,
    )
    call = await rig.call(script)
    log = await rig.finish(call, timeout=60)
    assert log.errors == []
    assert [text for _, _, text in log.said] == ["What should I train today?", "Legs sound good"]
    # Everything Twilio received was whole 20 ms μ-law frames, each chunk followed by a mark.
    assert {n for _, n in log.media_received} == {160}
    assert len(log.marks_echoed) >= 3 and not any(cleared for _, _, cleared in log.marks_echoed)
    await asyncio.sleep(0.3)
    db = rig.db
    rows = await db.fetch(
        "SELECT seq, speaker, text, interrupted, start_ms FROM call_transcripts "
        "WHERE call_id = $1 ORDER BY seq",
        call["id"],
    )
    speakers = [r["speaker"] for r in rows]
    assert speakers[:4] == ["persona", "caller", "persona", "caller"], rows
    assert rows[0]["text"].startswith("Hey, it's Brad!")  # the persona greets first
    assert rows[1]["text"] == "What should I train today?"
    assert "What should I train today" in rows[2]["text"] and rows[2]["interrupted"] is False
    assert rows[3]["text"] == "Legs sound good"
    assert [r["start_ms"] for r in rows] == sorted(r["start_ms"] for r in rows)
    lat = await db.fetch(
        "SELECT * FROM call_turn_latencies WHERE call_id = $1 ORDER BY turn_id", call["id"]
    )
    assert len(lat) == 2
    for r in lat:
        stages = [
            r["speech_end_ms"],
            r["stt_final_ms"],
            r["llm_first_token_ms"],
            r["tts_first_byte_ms"],
            r["first_media_ms"],
        ]
        assert None not in stages and stages == sorted(stages), stages
        assert r["voice_to_voice_ms"] == r["first_media_ms"] - r["speech_end_ms"]
    c = await db.fetchrow(
        "SELECT status, duration_seconds, credits_used, finalized_at, stream_sid "
        "FROM calls WHERE id = $1",
        call["id"],
    )
    assert c["status"] == "completed" and c["finalized_at"] is not None and c["stream_sid"]
    assert c["credits_used"] == -(-c["duration_seconds"] // 60)
    logs = await db.fetchrow(
        "SELECT turn_count, interrupt_count, avg_response_time_ms FROM call_logs "
        "WHERE call_id = $1",
        call["id"],
    )
    assert (
        logs["turn_count"] >= 2
        and logs["interrupt_count"] == 0
        and logs["avg_response_time_ms"] > 0
    )
    # The LLM saw the persona's prompt and the conversation so far.
    messages = rig.stack.llm.requests[-1].body["messages"]
    assert messages[0]["role"] == "system" and "Brad" in messages[0]["content"]
    assert [m["role"] for m in messages[1:4]] == ["assistant", "user", "assistant"]
    # The call's tasks are all gone.
    await asyncio.sleep(0.2)
    assert rig.voice.sessions == {}
    assert call_tasks() == []


async def test_dtmf_is_recorded_and_answered(rig: VoiceRig) -> None:
    script = CallerScript(dtmf=[(4.5, "7")], hang_up_after=None, max_seconds=9)
    call = await rig.call(script, number="+15557770002")
    await rig.finish(call)
    await asyncio.sleep(0.3)
    rows = await rig.db.fetch(
        "SELECT speaker, text FROM call_transcripts WHERE call_id = $1 ORDER BY seq", call["id"]
    )
    assert ("dtmf", "7") in [(r["speaker"], r["text"]) for r in rows]
    assert any(
        "pressed 7" in (m.get("content") or "")
        for req in rig.stack.llm.requests
        for m in req.body["messages"]
    )
