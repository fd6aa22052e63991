"""llama.cpp behind the LLM stand-in: a local instruct model generating replies token by token.

The model runs in-process through ``llama-cpp-python`` (compiled once by ``make run``; see
README "Local engines") on one worker thread: llama.cpp releases the GIL while it computes, so
the stand-ins' event loop keeps serving while a reply is generated. One generation runs at a
time (two cores cannot run two 0.5 B models usefully); up to ``max_waiting`` more wait their
turn, beyond that the stand-in answers 429 as Cerebras would. A reply whose client went away
(barge-in) stops generating at the next token.

Usage is counted by the model's own tokenizer, so the meter sees real token counts. A long
call's history that would overflow the model's context loses its oldest turns (the system
prompt stays), as a hosted model's context-window management would; one message too long by
itself is cut.
"""

from __future__ import annotations

import asyncio
import threading
from collections import deque
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from voice_pipeline.logs import get_logger
from voice_pipeline.sim.llm import EngineBusy, usage_dict

log = get_logger("sim.local.llama")

MAX_TOKENS = 160  # a phone reply; the pipeline normally sets its own limit


class LlamaEngine:
    def __init__(
        self, model_path: Path, *, n_threads: int = 2, n_ctx: int = 4096, max_waiting: int = 4
    ) -> None:
        self.model_path = model_path
        self.n_threads = n_threads
        self.n_ctx = n_ctx
        self.max_waiting = max_waiting
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="llama")
        self._llm: Any = None
        self._waiting = 0
        # (completion tokens, finish) of the latest generations, for tests and debugging
        self.history: deque[tuple[int, str]] = deque(maxlen=100)

    def _load(self) -> None:
        from llama_cpp import Llama

        self._llm = Llama(
            model_path=str(self.model_path),
            n_ctx=self.n_ctx,
            n_threads=self.n_threads,
            verbose=False,
        )
        # Warm up: the first evaluation is several times slower than the next ones.
        self._llm.create_chat_completion(messages=[{"role": "user", "content": "Hi"}], max_tokens=1)

    async def load(self) -> None:
        await asyncio.get_running_loop().run_in_executor(self._pool, self._load)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    async def generate(
        self, messages: list[dict[str, Any]], max_tokens: int | None
    ) -> _LlamaSource:
        if self._waiting > self.max_waiting:
            raise EngineBusy
        return _LlamaSource(self, _clean(messages), max_tokens or MAX_TOKENS)


def _clean(messages: list[dict[str, Any]]) -> list[dict[str, str]]:
    """Plain role/content turns for the chat template (tool-call turns have no text)."""
    out = []
    for m in messages:
        role = m.get("role")
        if role not in ("system", "user", "assistant"):
            continue
        content = m.get("content") or ""
        if isinstance(content, list):  # content parts
            content = " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
        out.append({"role": str(role), "content": str(content)})
    return out


TURN_OVERHEAD = 8  # chat-template tokens around each message


def fit(messages: list[dict[str, str]], count: Any, budget: int) -> list[dict[str, str]]:
    """Drop the oldest non-system turns until the prompt fits ``budget`` tokens."""
    sizes = [count(m["content"]) + TURN_OVERHEAD for m in messages]
    keep = list(range(len(messages)))
    while sum(sizes[i] for i in keep) > budget:
        droppable = [i for i in keep[:-1] if messages[i]["role"] != "system"]
        if not droppable:
            break
        keep.remove(droppable[0])
    out = [dict(messages[i]) for i in keep]
    over = sum(sizes[i] for i in keep) - budget
    if over > 0 and out:  # one message too long by itself: keep its end (the latest words)
        last = out[-1]["content"]
        out[-1]["content"] = last[-max(0, len(last) - 4 * over) :] if len(last) > 4 * over else ""
    return out


class _LlamaSource:
    reasoning = ""

    def __init__(self, engine: LlamaEngine, messages: list[dict[str, str]], limit: int) -> None:
        self.engine = engine
        self.messages = messages
        self.limit = limit
        self.tool_calls: list[dict[str, Any]] = []
        self._finish = "stop"
        self._prompt = 0
        self._completion = 0
        self._stop = threading.Event()
        self._future: asyncio.Future[None] | None = None

    def _run(self, loop: asyncio.AbstractEventLoop, queue: asyncio.Queue[str | None]) -> None:
        llm = self.engine._llm
        try:
            if self._stop.is_set():
                return
            budget = self.engine.n_ctx - self.limit - 64
            messages = fit(self.messages, lambda t: len(llm.tokenize(t.encode(), False)), budget)
            stream = llm.create_chat_completion(
                messages=messages,
                stream=True,
                max_tokens=self.limit,
                temperature=0.7,
                top_p=0.9,
                repeat_penalty=1.1,
            )
            for chunk in stream:
                choice = chunk["choices"][0]
                piece = choice["delta"].get("content")
                if piece:
                    self._completion += 1
                    loop.call_soon_threadsafe(queue.put_nowait, piece)
                if choice.get("finish_reason"):
                    self._finish = choice["finish_reason"]
                if self._stop.is_set():
                    stream.close()
                    break
            # llama.cpp keeps the evaluated context: prompt = everything evaluated minus the reply.
            self._prompt = max(0, int(llm.n_tokens) - self._completion)
            self.engine.history.append((self._completion, self._finish))
        except Exception as err:  # the client must see an end, whatever happened
            log.warning("llama_generation_failed", error=str(err))
            self._finish = "stop"  # the reply ends where it broke; the log says why
        finally:
            loop.call_soon_threadsafe(queue.put_nowait, None)

    async def tokens(self) -> AsyncIterator[str]:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[str | None] = asyncio.Queue()
        self.engine._waiting += 1
        try:
            self._future = loop.run_in_executor(self.engine._pool, self._run, loop, queue)
            while (piece := await queue.get()) is not None:
                yield piece
        finally:
            self.engine._waiting -= 1
            self._stop.set()

    def finish(self) -> str:
        return self._finish

    def usage(self) -> dict[str, Any]:
        return usage_dict(self._prompt, self._completion)

    async def aclose(self) -> None:
        self._stop.set()
