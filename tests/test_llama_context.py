"""Guards the local LLM's context management (no model needed): a history too long for the
context loses its oldest turns, never the system prompt nor the newest message, and a single
message too long by itself keeps its end."""

from __future__ import annotations

from voice_pipeline.sim.local.llama import TURN_OVERHEAD, fit


def words(text: str) -> int:
    return len(text.split())


def test_oldest_turns_go_first_and_the_system_prompt_stays() -> None:
    history = [{"role": "system", "content": "persona " * 30}]
    for i in range(20):
        role = "user" if i % 2 == 0 else "assistant"
        history.append({"role": role, "content": f"turn{i} " + "word " * 19})
    out = fit(history, words, 200)
    assert out[0] == history[0]
    assert out[-1] == history[-1]
    assert sum(words(m["content"]) + TURN_OVERHEAD for m in out) <= 200
    kept = [m["content"].split()[0] for m in out[1:]]
    assert kept == [f"turn{i}" for i in range(20 - len(kept), 20)]  # a contiguous recent tail
    assert fit(history, words, 10_000) == history  # fits: untouched


def test_one_message_too_long_by_itself_keeps_its_end() -> None:
    chars = lambda t: len(t) // 4  # noqa: E731 - ~4 characters per token
    text = "a" * 2000 + "THE END"
    out = fit([{"role": "system", "content": "s"}, {"role": "user", "content": text}], chars, 100)
    assert out[-1]["content"].endswith("THE END")
    assert sum(chars(m["content"]) + TURN_OVERHEAD for m in out) <= 100
