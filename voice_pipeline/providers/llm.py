"""Streaming chat completions through the official ``openai.AsyncOpenAI`` client.

Cerebras by default (``LLM_BASE_URL``); any OpenAI-compatible server works. Only
``delta.content`` is ever spoken — ``delta.reasoning`` (Cerebras) is dropped. Usage is read from
whichever chunk carries it (Cerebras: the finish chunk; OpenAI: a separate empty-choices chunk).
Cancelling the consuming task closes the HTTP response, which is how a barge-in stops
generation at the source.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from openai import AsyncOpenAI

from voice_pipeline.settings import Settings


@dataclass
class LlmUsage:
    input_tokens: int = 0
    output_tokens: int = 0


def llm_client(settings: Settings, *, timeout: float = 30.0) -> AsyncOpenAI:
    return AsyncOpenAI(
        base_url=settings.llm_base_url,
        api_key=settings.llm_api_key or "stand-in",
        max_retries=2,
        timeout=timeout,
    )


class LlmClient:
    def __init__(self, client: AsyncOpenAI, model: str) -> None:
        self.client = client
        self.model = model
        self.usage = LlmUsage()  # whole call

    async def stream(
        self,
        messages: list[dict[str, Any]],
        *,
        max_tokens: int,
        temperature: float,
        turn_usage: LlmUsage | None = None,
    ) -> AsyncIterator[str]:
        extra: dict[str, Any] = {}
        if self.model.startswith("gpt-oss"):
            extra["reasoning_effort"] = "low"  # voice turns: answer, don't deliberate
        stream = await self.client.chat.completions.create(
            model=self.model,
            messages=messages,
            stream=True,  # type: ignore[arg-type]
            stream_options={"include_usage": True},
            max_completion_tokens=max_tokens,
            temperature=temperature,
            **extra,
        )
        try:
            async for chunk in stream:
                if chunk.usage:
                    self.usage.input_tokens += chunk.usage.prompt_tokens
                    self.usage.output_tokens += chunk.usage.completion_tokens
                    if turn_usage is not None:
                        turn_usage.input_tokens += chunk.usage.prompt_tokens
                        turn_usage.output_tokens += chunk.usage.completion_tokens
                if chunk.choices:
                    text = chunk.choices[0].delta.content
                    if text:
                        yield text
        finally:
            await stream.close()
