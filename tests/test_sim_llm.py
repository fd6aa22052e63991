"""Guards the OpenAI-compatible stand-in against protocols.md §4 with the official openai SDK:
Cerebras-shaped streams (usage on the finish chunk, no [DONE]) and OpenAI-shaped ones,
reasoning deltas, tool calls, length cut-off, non-streaming bodies, Cerebras error bodies,
429 retried by the SDK, and the faults (drop, stall, malformed line)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import openai
import pytest
import pytest_asyncio
from aiohttp.test_utils import TestServer
from openai import AsyncOpenAI

from voice_pipeline.sim.latency import Latency
from voice_pipeline.sim.llm import LlmSim, Reply

KEY = "csk-test"
MSGS = [{"role": "system", "content": "You are Brad."}, {"role": "user", "content": "Hey Brad"}]


@pytest_asyncio.fixture
async def llm() -> AsyncIterator[tuple[LlmSim, AsyncOpenAI]]:
    sim = LlmSim(api_key=KEY)
    server = TestServer(sim.app, host="127.0.0.1", port=0)
    await server.start_server()
    client = AsyncOpenAI(base_url=f"http://127.0.0.1:{server.port}/v1", api_key=KEY, max_retries=2)
    yield sim, client
    await client.close()
    await server.close()


async def collect(stream: Any) -> tuple[str, str, Any, list[Any]]:
    text, reasoning, usage, chunks = "", "", None, []
    async for ch in stream:
        chunks.append(ch)
        if ch.choices:
            d = ch.choices[0].delta
            text += d.content or ""
            reasoning += (d.model_extra or {}).get("reasoning") or ""
        if ch.usage:
            usage = ch.usage
    return text, reasoning, usage, chunks


async def test_cerebras_stream_usage_on_finish_chunk_and_no_done(llm: Any) -> None:
    sim, client = llm
    sim.script.append(Reply("Hey man! Good to hear you.", reasoning="User greets. Be warm."))
    stream = await client.chat.completions.create(
        model="gpt-oss-120b",
        messages=MSGS,
        stream=True,
        stream_options={"include_usage": True},
        max_completion_tokens=100,
        temperature=0.7,
    )
    text, reasoning, usage, chunks = await collect(stream)
    assert text == "Hey man! Good to hear you." and reasoning == "User greets. Be warm."
    finish = [c for c in chunks if c.choices and c.choices[0].finish_reason]
    assert len(finish) == 1 and finish[0].choices[0].finish_reason == "stop"
    assert finish[0].usage is not None and usage.completion_tokens == 6
    assert (finish[0].model_extra or {}).get("time_info")
    assert all(c.choices for c in chunks)  # Cerebras: no separate empty-choices usage chunk
    body = sim.requests[-1].body
    assert (
        body["stream_options"] == {"include_usage": True} and body["max_completion_tokens"] == 100
    )
    assert sim.requests[-1].headers["Authorization"] == f"Bearer {KEY}"


async def test_openai_mode_and_done_marker(llm: Any) -> None:
    sim, client = llm
    sim.mode = "openai"
    stream = await client.chat.completions.create(
        model="gpt-oss-120b", messages=MSGS, stream=True, stream_options={"include_usage": True}
    )
    text, _, usage, chunks = await collect(stream)
    assert text.startswith("Got it, you said Hey Brad")
    assert chunks[-1].choices == [] and usage.prompt_tokens > 0


async def test_tool_calls_length_cutoff_and_non_streaming(llm: Any) -> None:
    sim, client = llm
    sim.script.append(Reply("", tool_calls=[{"name": "end_call", "arguments": {"reason": "bye"}}]))
    tools = [
        {"type": "function", "function": {"name": "end_call", "parameters": {"type": "object"}}}
    ]
    stream = await client.chat.completions.create(
        model="gpt-oss-120b", messages=MSGS, stream=True, tools=tools, tool_choice="auto"
    )
    _, _, _, chunks = await collect(stream)
    calls = [tc for c in chunks if c.choices for tc in (c.choices[0].delta.tool_calls or [])]
    assert len(calls) == 1 and calls[0].function.name == "end_call"
    assert calls[0].function.arguments == '{"reason": "bye"}' and len(calls[0].id) == 9
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "tool_calls"

    sim.script.append(Reply("one two three four five six"))
    stream = await client.chat.completions.create(
        model="gpt-oss-120b", messages=MSGS, stream=True, max_completion_tokens=3
    )
    text, _, _, chunks = await collect(stream)
    assert text == "one two three" and chunks[-1].choices[0].finish_reason == "length"

    sim.script.append(Reply("Plain answer.", reasoning="thinking"))
    whole = await client.chat.completions.create(model="gpt-oss-120b", messages=MSGS)
    assert whole.choices[0].message.content == "Plain answer."
    assert whole.usage.completion_tokens == 2 and (whole.model_extra or {}).get("time_info")


async def test_errors_use_cerebras_bodies_and_429_is_retried(llm: Any) -> None:
    sim, client = llm
    bad = AsyncOpenAI(base_url=str(client.base_url), api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as auth:
        await bad.chat.completions.create(model="gpt-oss-120b", messages=MSGS)
    assert auth.value.code == "wrong_api_key"
    await bad.close()
    with pytest.raises(openai.NotFoundError) as nf:
        await client.chat.completions.create(model="llama-3.3-70b", messages=MSGS)
    assert nf.value.code == "model_not_found"
    with pytest.raises(openai.BadRequestError):
        await client.chat.completions.create(
            model="gpt-oss-120b", messages=MSGS, presence_penalty=0.5
        )
    with pytest.raises(openai.BadRequestError):
        await client.chat.completions.create(
            model="gpt-oss-120b", messages=MSGS, stream_options={"include_usage": True}
        )
    body = {
        "message": "Requests per minute limit exceeded - too many requests sent.",
        "type": "too_many_requests_error",
        "param": "quota",
        "code": "request_quota_exceeded",
    }
    sim.faults.errors.append((429, body, {"retry-after": "0.1"}))
    reply = await client.chat.completions.create(model="gpt-oss-120b", messages=MSGS)
    assert reply.choices[0].message.content  # retried once, then answered
    sim.faults.errors.extend([(429, body, {"retry-after": "0.1"})] * 3)
    with pytest.raises(openai.RateLimitError) as rl:
        await client.chat.completions.create(model="gpt-oss-120b", messages=MSGS)
    assert rl.value.code == "request_quota_exceeded"


async def test_drop_stall_malformed_and_latency(llm: Any) -> None:
    sim, client = llm
    sim.faults.drop_after_tokens = 3
    with pytest.raises(openai.APIError):
        await collect(
            await client.chat.completions.create(model="gpt-oss-120b", messages=MSGS, stream=True)
        )
    sim.faults.drop_after_tokens = None
    sim.faults.stall_after_tokens = 2
    stream = await client.chat.completions.create(model="gpt-oss-120b", messages=MSGS, stream=True)
    got = []
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.5):
            async for ch in stream:
                got.append(ch)
    assert sum(1 for c in got if c.choices and c.choices[0].delta.content) == 2
    await stream.close()  # what barge-in does: the server sees the disconnect
    sim.faults.stall_after_tokens = None
    sim.faults.malformed_after_tokens = 1
    with pytest.raises(Exception):  # noqa: B017 - the SDK raises a decode error of its choosing
        await collect(
            await client.chat.completions.create(model="gpt-oss-120b", messages=MSGS, stream=True)
        )
    sim.faults.malformed_after_tokens = None
    sim.latency = Latency(first_ms=150, per_token_ms=10)
    start = time.monotonic()
    stream = await client.chat.completions.create(model="gpt-oss-120b", messages=MSGS, stream=True)
    async for ch in stream:
        if ch.choices and ch.choices[0].delta.content:
            break
    assert time.monotonic() - start >= 0.15
    await stream.close()
