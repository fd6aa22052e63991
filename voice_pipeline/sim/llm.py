"""The OpenAI-compatible chat-completions stand-in, speaking as Cerebras does (protocols.md §4).

- ``POST /v1/chat/completions`` with ``Authorization: Bearer``; ``GET /v1/models``.
- Streaming (SSE, ``data: <json>`` + blank line): in ``cerebras`` mode a role chunk, content
  chunks (keys omitted rather than null), an empty ``delta: {}`` chunk, then the finish chunk
  carrying ``usage`` and ``time_info``, and EOF — ``[DONE]`` only if ``send_done``; in ``openai``
  mode null fields, a separate ``choices: []`` usage chunk when ``include_usage``, and ``[DONE]``.
- ``delta.reasoning`` chunks before the content when a reasoning text is scripted (never to be
  spoken); tool calls in one delta with complete arguments and a short id, finish
  ``tool_calls``; ``max_completion_tokens``/``max_tokens`` cut the reply with finish ``length``.
- Errors use Cerebras' top-level body (``message``/``type``/``param``/``code``): 401 wrong key,
  404 unknown model, 400 for fields Cerebras rejects and for ``stream_options`` without
  ``stream``, injected 429 (with ``retry-after``) and 5xx.
- Faults: drop the connection after N tokens, stall after N tokens, one malformed SSE line.

Replies come from a pluggable responder (scripted, deterministic) or a :class:`ChatEngine`
that generates them token by token (llama.cpp, sim/local/llama.py); either way the wire format
above is the stand-in's, so the client sees Cerebras whatever produced the words.
"""

from __future__ import annotations

import asyncio
import json
import re
import secrets
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from aiohttp import web

from voice_pipeline.sim.latency import Latency

REJECTED_FIELDS = (
    "frequency_penalty",
    "presence_penalty",
    "logit_bias",
    "parallel_tool_calls",
    "service_tier",
)
TOKEN_RE = re.compile(r"\s*\S+")


@dataclass
class Reply:
    text: str = ""
    reasoning: str = ""
    tool_calls: list[dict[str, Any]] = field(default_factory=list)  # [{"name", "arguments"}]


Responder = Callable[[list[dict[str, Any]], list[dict[str, Any]] | None], Reply]


def default_responder(messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None) -> Reply:
    """A polite, deterministic conversational reply that mentions what the caller said."""
    last = next(
        (str(m.get("content") or "") for m in reversed(messages) if m.get("role") == "user"), ""
    )
    if not last.strip():
        return Reply("Hi! It's good to hear from you. How has your day been so far?")
    heard = last.strip().rstrip(".?!")
    return Reply(
        f"Got it, you said {heard}. That sounds important to you. "
        "Tell me a little more about it, and we'll figure out the next step together."
    )


class TokenSource(Protocol):
    """One reply being generated: text pieces in order, then its finish reason and usage."""

    reasoning: str
    tool_calls: list[dict[str, Any]]

    def tokens(self) -> AsyncIterator[str]: ...

    def finish(self) -> str: ...  # valid once tokens() is exhausted

    def usage(self) -> dict[str, Any]: ...  # valid once tokens() is exhausted

    async def aclose(self) -> None: ...  # stop generating (the client went away)


class ChatEngine(Protocol):
    async def generate(self, messages: list[dict[str, Any]], max_tokens: int | None) -> TokenSource:
        """Start generating a reply; raises ``EngineBusy`` if it cannot take more work."""
        ...


class EngineBusy(Exception):
    pass


class ScriptedSource:
    """A whole :class:`Reply` sent token by token at the stand-in's configured pace."""

    def __init__(
        self, reply: Reply, messages: list[dict[str, Any]], limit: Any, latency: Latency
    ) -> None:
        self.reasoning = reply.reasoning
        self.tool_calls = reply.tool_calls
        self.latency = latency
        self._tokens = TOKEN_RE.findall(reply.text)
        self._finish = "tool_calls" if reply.tool_calls else "stop"
        if isinstance(limit, int) and len(self._tokens) > limit:
            self._tokens, self._finish = self._tokens[:limit], "length"
        self._prompt = sum(count_tokens(str(m.get("content") or "")) + 4 for m in messages)

    async def tokens(self) -> AsyncIterator[str]:
        for i, token in enumerate(self._tokens):
            if i and self.latency.per_token_ms:
                await asyncio.sleep(self.latency.per_token())
            yield token

    def finish(self) -> str:
        return self._finish

    def usage(self) -> dict[str, Any]:
        return usage_dict(self._prompt, len(self._tokens))

    async def aclose(self) -> None:
        return None


def usage_dict(prompt: int, completion: int) -> dict[str, Any]:
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": 0},
    }


@dataclass(frozen=True, slots=True)
class _Answer:
    """One reply as it will be sent: its token source and chunk ids."""

    source: TokenSource
    cid: str
    created: int
    model: str


@dataclass
class LlmFaults:
    errors: list[tuple[int, dict[str, Any], dict[str, str]]] = field(default_factory=list)
    drop_after_tokens: int | None = None
    stall_after_tokens: int | None = None
    malformed_after_tokens: int | None = None


@dataclass
class LlmRequestLog:
    body: dict[str, Any]
    headers: dict[str, str]
    started: float
    first_token_at: float | None = None
    finished_at: float | None = None
    disconnected: bool = False


def cerebras_error(
    status: int,
    message: str,
    typ: str,
    param: str | None,
    code: str,
    headers: dict[str, str] | None = None,
) -> web.Response:
    return web.json_response(
        {"message": message, "type": typ, "param": param, "code": code},
        status=status,
        headers=headers,
    )


def count_tokens(text: str) -> int:
    return len(TOKEN_RE.findall(text))


class LlmSim:
    def __init__(
        self,
        *,
        api_key: str | None = None,
        models: tuple[str, ...] = ("gpt-oss-120b", "llama3.1-8b", "local"),
        responder: Responder | None = None,
        engine: ChatEngine | None = None,
        latency: Latency | None = None,
        mode: str = "cerebras",
        send_done: bool = False,
    ) -> None:
        self.api_key = api_key
        self.models = models
        self.responder = responder or default_responder
        self.engine = engine  # when set, replies are generated by it (scripted ones go first)
        self.script: list[Reply] = []  # replies used first, in order, before the responder
        self.latency = latency or Latency()
        self.mode = mode
        self.send_done = send_done
        self.faults = LlmFaults()
        self.requests: list[LlmRequestLog] = []
        self.app = web.Application()
        self.app.router.add_post("/v1/chat/completions", self._chat)
        self.app.router.add_get("/v1/models", self._models)

    def _auth(self, request: web.Request) -> bool:
        scheme, _, key = request.headers.get("Authorization", "").partition(" ")
        return scheme == "Bearer" and bool(key) and (self.api_key is None or key == self.api_key)

    async def _models(self, request: web.Request) -> web.Response:
        if not self._auth(request):
            return cerebras_error(
                401, "Wrong API Key", "invalid_request_error", "api_key", "wrong_api_key"
            )
        return web.json_response(
            {
                "object": "list",
                "data": [
                    {"id": m, "object": "model", "created": 0, "owned_by": "stand-in"}
                    for m in self.models
                ],
            }
        )

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        if not self._auth(request):
            return cerebras_error(
                401, "Wrong API Key", "invalid_request_error", "api_key", "wrong_api_key"
            )
        if self.faults.errors:
            status, body, headers = self.faults.errors.pop(0)
            return web.json_response(body, status=status, headers=headers)
        try:
            body = await request.json()
        except ValueError:
            return cerebras_error(
                400, "Request body is not valid JSON", "invalid_request_error", None, "invalid_json"
            )
        if not isinstance(body, dict) or not isinstance(body.get("messages"), list):
            return cerebras_error(
                400,
                "messages is required",
                "invalid_request_error",
                "messages",
                "missing_required_parameter",
            )
        model = body.get("model")
        if model not in self.models:
            return cerebras_error(
                404,
                f"Model {model} does not exist or you do not have access to it.",
                "not_found_error",
                "model",
                "model_not_found",
            )
        for name in REJECTED_FIELDS:
            if name in body:
                return cerebras_error(
                    400,
                    f"Unsupported parameter: {name}",
                    "invalid_request_error",
                    name,
                    "unsupported_parameter",
                )
        stream = bool(body.get("stream"))
        if body.get("stream_options") is not None and not stream:
            return cerebras_error(
                400,
                "stream_options is only allowed when stream is true",
                "invalid_request_error",
                "stream_options",
                "invalid_parameter",
            )
        log = LlmRequestLog(body, dict(request.headers), time.monotonic())
        self.requests.append(log)
        limit = body.get("max_completion_tokens") or body.get("max_tokens")
        source: TokenSource
        if self.script or self.engine is None:
            reply = (
                self.script.pop(0)
                if self.script
                else self.responder(body["messages"], body.get("tools"))
            )
            source = ScriptedSource(reply, body["messages"], limit, self.latency)
        else:
            try:
                source = await self.engine.generate(
                    body["messages"], limit if isinstance(limit, int) else None
                )
            except EngineBusy:
                return cerebras_error(
                    429,
                    "Requests per minute limit exceeded - too many requests sent.",
                    "too_many_requests_error",
                    "quota",
                    "request_quota_exceeded",
                    headers={"retry-after": "1"},
                )
        ans = _Answer(source, "chatcmpl-" + secrets.token_hex(12), int(time.time()), model)
        if not stream:
            return await self._whole(log, ans)
        return await self._stream(request, log, body, ans)

    async def _whole(self, log: LlmRequestLog, ans: _Answer) -> web.Response:
        source, cid, created, model = ans.source, ans.cid, ans.created, ans.model
        await asyncio.sleep(self.latency.first_result())
        text = "".join([t async for t in source.tokens()])  # at the source's own pace
        finish, usage = source.finish(), source.usage()
        message: dict[str, Any] = {"role": "assistant", "content": text}
        if source.reasoning:
            message["reasoning"] = source.reasoning
        if source.tool_calls:
            message["tool_calls"] = self._tool_calls(source.tool_calls)
        log.finished_at = time.monotonic()
        return web.json_response(
            {
                "id": cid,
                "object": "chat.completion",
                "created": created,
                "model": model,
                "system_fingerprint": "fp_standin",
                "choices": [{"index": 0, "message": message, "finish_reason": finish}],
                "usage": {
                    **usage,
                    "completion_tokens_details": {
                        "accepted_prediction_tokens": 0,
                        "rejected_prediction_tokens": 0,
                        "reasoning_tokens": count_tokens(source.reasoning),
                    },
                },
                "time_info": self._time_info(log),
            }
        )

    @staticmethod
    def _tool_calls(calls: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [
            {
                "id": secrets.token_hex(5)[:9],
                "type": "function",
                "function": {"name": c["name"], "arguments": json.dumps(c.get("arguments", {}))},
            }
            for c in calls
        ]

    @staticmethod
    def _time_info(log: LlmRequestLog) -> dict[str, float]:
        total = time.monotonic() - log.started
        return {
            "queue_time": 0.0001,
            "prompt_time": 0.001,
            "completion_time": total,
            "total_time": total,
            "created": time.time(),
        }

    async def _stream(
        self, request: web.Request, log: LlmRequestLog, body: dict[str, Any], ans: _Answer
    ) -> web.StreamResponse:
        source, cid, created, model = ans.source, ans.cid, ans.created, ans.model
        cerebras = self.mode == "cerebras"
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        resp = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream; charset=utf-8",
                "Cache-Control": "no-cache",
            }
        )
        await resp.prepare(request)

        def chunk(delta: dict[str, Any], finish_reason: str | None = None, **extra: Any) -> dict:
            choice: dict[str, Any] = {"delta": delta, "index": 0}
            if finish_reason is not None or not cerebras:
                choice["finish_reason"] = finish_reason
            if not cerebras:
                choice["logprobs"] = None
            out = {
                "id": cid,
                "choices": [choice],
                "created": created,
                "model": model,
                "system_fingerprint": "fp_standin",
                "object": "chat.completion.chunk",
            }
            if not cerebras:
                out["usage"] = None
            out.update(extra)
            return out

        async def send(obj: dict[str, Any] | str) -> None:
            data = obj if isinstance(obj, str) else json.dumps(obj)
            await resp.write(f"data: {data}\n\n".encode())

        try:
            role: dict[str, Any] = {"role": "assistant"}
            if not cerebras:
                role["content"] = ""
            await send(chunk(role))
            await asyncio.sleep(self.latency.first_result())
            for piece in TOKEN_RE.findall(source.reasoning):
                await send(chunk({"reasoning": piece}))
            faults = self.faults
            i = -1
            async for token in source.tokens():
                i += 1
                if faults.drop_after_tokens is not None and i >= faults.drop_after_tokens:
                    log.disconnected = True
                    if request.transport is not None:
                        request.transport.abort()
                    return resp
                if faults.stall_after_tokens is not None and i >= faults.stall_after_tokens:
                    await asyncio.sleep(3600)
                if faults.malformed_after_tokens is not None and i == faults.malformed_after_tokens:
                    await send("{not json")
                await send(chunk({"content": token}))
                log.first_token_at = log.first_token_at or time.monotonic()
            finish, usage = source.finish(), source.usage()
            if source.tool_calls:
                calls = [
                    {"index": j, **c} for j, c in enumerate(self._tool_calls(source.tool_calls))
                ]
                await send(chunk({"tool_calls": calls}))
            if cerebras:
                await send(chunk({}))
                extra = {"usage": usage, "time_info": self._time_info(log)} if include_usage else {}
                await send(chunk({}, finish, **extra))
            else:
                await send(chunk({}, finish))
                if include_usage:
                    await send(
                        {
                            "id": cid,
                            "choices": [],
                            "created": created,
                            "model": model,
                            "object": "chat.completion.chunk",
                            "usage": usage,
                        }
                    )
            if self.send_done or not cerebras:
                await send("[DONE]")
            log.finished_at = time.monotonic()
            await resp.write_eof()
        except ConnectionResetError:  # the client went away (barge-in closes the stream)
            log.disconnected = True
        except asyncio.CancelledError:
            log.disconnected = True
            raise
        finally:
            await source.aclose()  # a local engine stops generating for a caller who left
        return resp
