"""Guards the local engines behind the stand-ins: Piper speech → Silero + Whisper answering as
Deepgram (SpeechStarted, a speech_final with the words, UtteranceEnd); llama.cpp answering as
Cerebras through the official openai SDK (streamed text, usage from the model's tokenizer, a
reply stopped when its client leaves); and a whole call on them, where the caller's words reach
the transcript and what the caller heard is what the transcript says the persona said."""

from __future__ import annotations

import json

import aiohttp
import pytest
from aiohttp.test_utils import TestServer
from openai import AsyncOpenAI

from tests.engines_harness import found, words
from tests.voice_harness import VoiceRig
from voice_pipeline.sim.deepgram import DeepgramSim
from voice_pipeline.sim.llm import LlmSim
from voice_pipeline.sim.local import LocalEngines
from voice_pipeline.sim.twilio_media import CallerScript, Utterance

pytestmark = pytest.mark.engines


async def test_whisper_and_silero_answer_as_deepgram(engines: LocalEngines) -> None:
    speech = await engines.synthesizer.speak_ulaw("Can you help me plan a workout for today?")
    audio = b"\xff" * 4000 + speech + b"\xff" * 16000  # 0.5 s silence, speech, 2 s silence
    sim = DeepgramSim(api_key="k", recognizer=engines.recognizer, detector=engines.detector)
    server = TestServer(sim.app, host="127.0.0.1", port=0)
    await server.start_server()
    host = f"127.0.0.1:{server.port}"
    query = (
        "encoding=mulaw&sample_rate=8000&interim_results=true&endpointing=300"
        "&utterance_end_ms=1000&vad_events=true&punctuate=true"
    )
    got: list[dict] = []
    try:
        async with (
            aiohttp.ClientSession() as http,
            http.ws_connect(
                f"ws://{host}/v1/listen?{query}", headers={"Authorization": "Token k"}
            ) as ws,
        ):
            for i in range(0, len(audio), 160):
                await ws.send_bytes(audio[i : i + 160])
            await ws.send_str(json.dumps({"type": "CloseStream"}))
            async for msg in ws:
                got.append(json.loads(msg.data))
    finally:
        await server.close()
    kinds = [m["type"] for m in got]
    finals = [m for m in got if m["type"] == "Results" and m["is_final"] and m["speech_final"]]
    assert "SpeechStarted" in kinds and kinds[-1] == "Metadata"
    assert len(finals) == 1, got
    text = finals[0]["channel"]["alternatives"][0]["transcript"]
    assert found(("help", "plan", "workout", "today"), text) >= 3, text
    assert kinds.index("SpeechStarted") < got.index(finals[0]) < kinds.index("UtteranceEnd")
    # Stream time: the speech starts about 0.5 s in, where the audio put it.
    started = next(m for m in got if m["type"] == "SpeechStarted")["timestamp"]
    assert 0.3 <= started <= 0.8


async def test_llama_answers_as_cerebras(engines: LocalEngines) -> None:
    sim = LlmSim(api_key="k", engine=engines.llm)
    server = TestServer(sim.app, host="127.0.0.1", port=0)
    await server.start_server()
    host = f"127.0.0.1:{server.port}"
    client = AsyncOpenAI(base_url=f"http://{host}/v1", api_key="k", max_retries=0)
    messages = [
        {"role": "system", "content": "You are Brad, a fitness coach on the phone. Be brief."},
        {"role": "user", "content": "How long should I rest between sets?"},
    ]
    try:
        stream = await client.chat.completions.create(
            model="gpt-oss-120b",
            messages=messages,
            stream=True,
            stream_options={"include_usage": True},
            max_completion_tokens=40,
        )
        text, usage, pieces = "", None, 0
        async for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                text += chunk.choices[0].delta.content
                pieces += 1
            usage = chunk.usage or usage
        assert len(words(text)) >= 3, text
        assert usage is not None and usage.completion_tokens == pieces
        assert usage.prompt_tokens > 20  # counted by the model's tokenizer, system prompt included
        assert engines.llm.history[-1][0] == pieces

        # A client that leaves mid-reply (barge-in) stops the generation.
        stream = await client.chat.completions.create(
            model="gpt-oss-120b",
            messages=[{"role": "user", "content": "Count slowly from one to one hundred."}],
            stream=True,
            max_completion_tokens=150,
        )
        seen = 0
        async for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                seen += 1
            if seen >= 3:
                break
        await stream.close()
        # The next request waits for the engine's worker: by then the cut reply has ended.
        again = await client.chat.completions.create(
            model="gpt-oss-120b", messages=messages, max_completion_tokens=5
        )
        assert again.choices[0].message.content
        cut_tokens, _ = engines.llm.history[-2]
        assert cut_tokens < 150

        # A call long enough to overflow the model's context still gets answers.
        long_call = [messages[0]]
        for i in range(120):
            long_call.append({"role": "user", "content": f"Set {i}: " + "squats and lunges " * 8})
            long_call.append({"role": "assistant", "content": "Great, keep going! " * 5})
        long_call.append(messages[1])
        reply = await client.chat.completions.create(
            model="gpt-oss-120b", messages=long_call, max_completion_tokens=20
        )
        assert reply.choices[0].message.content
        assert reply.usage is not None and reply.usage.prompt_tokens < engines.llm.n_ctx
    finally:
        await client.close()
        await server.close()


async def test_a_call_on_local_engines(engine_rig: VoiceRig, engines: LocalEngines) -> None:
    lines = [
        "Hey Brad, can you help me plan a workout for today?",
        # Not "rest between sets": Whisper base hears "respite ween sets" 2 times in 5 at 8 kHz.
        "How many sets should I do for each exercise?",
        "Thanks, that is all.",
    ]
    utterances = []
    for line in lines:
        utterances.append(Utterance(line, ulaw=await engines.synthesizer.speak_ulaw(line)))
    script = CallerScript(utterances=utterances, hang_up_after=1.5, max_seconds=120)
    call = await engine_rig.call(script)
    log = await engine_rig.finish(call, timeout=150)
    rows = await engine_rig.db.fetch(
        "SELECT speaker, text, start_ms, end_ms, interrupted FROM call_transcripts "
        "WHERE call_id = $1 ORDER BY seq",
        call["id"],
    )
    caller = [r["text"] for r in rows if r["speaker"] == "caller"]
    persona = [r for r in rows if r["speaker"] != "caller"]
    assert len(caller) == 3, rows
    assert found(("help", "plan", "workout", "today"), caller[0]) >= 3, caller
    assert found(("many", "sets", "each", "exercise"), caller[1]) >= 3, caller
    assert found(("thank", "all"), caller[2]) >= 1, caller
    # The greeting and an answer to each line, generated (not the scripted stand-in's echo).
    assert len(persona) >= 4, rows
    assert not any("you said" in r["text"].lower() for r in persona)
    # What the caller heard after the first line is the persona's first answer: transcribe it.
    said_end = log.said[0][1]
    answer = b"".join(bytes(h.audio) for h in log.heard if said_end <= h.start_ms < log.said[1][0])
    assert len(answer) > 8000  # more than a second of speech
    heard_text = await engines.recognizer.final(answer)
    first_answer = next(r for r in persona if r["start_ms"] >= said_end - 50)
    overlap = words(heard_text) & words(first_answer["text"])
    assert len(overlap) >= min(3, len(words(first_answer["text"]))), (
        heard_text,
        first_answer["text"],
    )
    # Caller-side voice-to-voice (end of speech → first persona audio), for the record only.
    for _start, end, _ in log.said:
        first = next((h.start_ms for h in log.heard if h.start_ms >= end), None)
        if first is not None:
            print(f"voice-to-voice (caller side): {first - end:.0f} ms")
