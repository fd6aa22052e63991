"""Guards barge-in end to end: caller speech over the persona sends `clear` before the caller
has finished their sentence, no audio of the old turn reaches the caller after the `clear`,
LLM and TTS of the old turn are cancelled, and the history and transcript keep only what the
caller heard (to the mark), flagged as interrupted."""

from __future__ import annotations

import asyncio

from tests.voice_harness import VoiceRig
from voice_pipeline.sim.llm import Reply
from voice_pipeline.sim.twilio_media import CallerScript, Utterance

STORY = (
    "Once upon a time there was a lifter named Sam who trained every single morning. "
    "He started with squats, then deadlifts, then a long walk by the river. "
    "Every week he added a little weight, and every month he felt a little stronger. "
    "One day his friend asked him for the secret, and Sam just smiled and said consistency."
)


async def test_caller_speech_stops_the_persona_at_once(rig: VoiceRig) -> None:
    rig.stack.llm.script.extend(
        [Reply(STORY), Reply("Sure, stopping. What would you like instead?")]
    )
    script = CallerScript(
        utterances=[
            Utterance("Tell me a long story"),
            Utterance("Wait, stop please", barge_in_after=3.4),
        ],
        hang_up_after=0.5,
        max_seconds=40,
    )
    call = await rig.call(script, number="+15557770101")
    log = await rig.finish(call, timeout=60)
    assert len(log.clears) == 1, log.clears
    clear_at = log.clears[0]
    barge_start, barge_end, _ = log.said[1]
    assert barge_start < clear_at < barge_end  # stopped while the caller was still talking
    stale = [t for t, _ in log.media_received if clear_at < t < barge_end]
    assert stale == []  # no frame of the old turn after the clear
    # Everything the caller heard of the story ended at the clear.
    story_heard = [h for h in log.heard if h.start_ms < clear_at and h.end_ms > log.said[0][1]]
    assert story_heard and story_heard[-1].end_ms <= clear_at + 25
    heard_ms = sum(h.end_ms - h.start_ms for h in story_heard)

    await asyncio.sleep(0.3)
    rows = await rig.db.fetch(
        "SELECT speaker, text, interrupted FROM call_transcripts WHERE call_id = $1 ORDER BY seq",
        call["id"],
    )
    cut = [r for r in rows if r["speaker"] == "persona" and r["interrupted"]]
    assert len(cut) == 1
    heard_text = cut[0]["text"]
    assert heard_text and STORY.startswith(heard_text) and len(heard_text) < len(STORY) / 2
    # What the marks prove was played: the text is no longer than the audio heard (65 ms/char).
    assert len(heard_text) * 65 <= heard_ms + 200
    # The next reply was generated from a history holding only what was heard.
    second = rig.stack.llm.requests[-1].body["messages"]
    assistant = [m["content"] for m in second if m["role"] == "assistant"]
    assert assistant[-1] == heard_text + "…"
    assert second[-1] == {"role": "user", "content": "Wait, stop please"}
    # The old turn's TTS context was closed and its LLM stream abandoned.
    tts_msgs = rig.stack.elevenlabs.sockets[-1].received
    closed = [m["context_id"] for m in tts_msgs if m.get("close_context")]
    assert len(closed) >= 2 and len(set(closed)) == len(closed)
    logs = await rig.db.fetchrow(
        "SELECT interrupt_count FROM call_logs WHERE call_id = $1", call["id"]
    )
    assert logs["interrupt_count"] == 1
    after = [r for r in rows if r["speaker"] == "persona"][-1]
    assert after["text"].startswith("Sure, stopping.")
