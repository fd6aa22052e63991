"""What one call looked like from the caller's side, and percentile summaries."""

from __future__ import annotations

import re
import statistics
from typing import Any

from benchmarks.rig import Delays
from voice_pipeline.clauses import ClauseSplitter
from voice_pipeline.sim.llm import Reply
from voice_pipeline.sim.twilio_media import CallerScript, StreamLog, Utterance

PLAN = (
    "Sure, here is the plan. First warm up for ten minutes, then three sets of squats, "
    "then lunges, and finish with a good long stretch."
)
STOP_REPLY = "No problem, stopping there. What would you like instead?"


def responder(messages: list[dict[str, Any]], tools: Any) -> Reply:
    last = str(messages[-1].get("content", "")).lower()
    return Reply(STOP_REPLY if "stop" in last else PLAN)


def conversation() -> CallerScript:
    """Ask, barge in on the answer, ask again, hang up."""
    return CallerScript(
        utterances=[
            Utterance("Can you plan my workout for today", after_silence=0.4),
            Utterance("Wait, actually stop", barge_in_after=1.5),
            Utterance("Okay thanks", after_silence=0.4),
        ],
        hang_up_after=0.3,
        max_seconds=60,
    )


def short_call() -> CallerScript:
    """One question, one answer, hang up (soak)."""
    return CallerScript(
        utterances=[Utterance("Wait, stop", after_silence=0.3)], hang_up_after=0.2, max_seconds=30
    )


def first_clause_tokens(text: str) -> int:
    clause = ClauseSplitter().push(text)[0]
    return len(re.findall(r"\s*\S+", clause))


def measure(log: StreamLog, delays: Delays | None) -> dict[str, Any]:
    """One call's figures; ``delays`` None (local engines): no configured delay to subtract."""
    media = [t for t, _ in log.media_received]
    out: dict[str, Any] = {
        "greeting_ms": media[0] if media else None,
        "turns": [],
        "barge_in": [],
        "errors": list(log.errors),
    }
    for start, end, text in log.said:
        first = next((t for t in media if t > end), None)
        if first is not None:
            v2v = first - end
            turn = {"voice_to_voice_ms": v2v}
            if delays is not None:
                reply = STOP_REPLY if "stop" in text.lower() else PLAN
                configured = (
                    delays.endpointing_ms
                    + delays.llm_first_ms
                    + (first_clause_tokens(reply) - 1) * 1000 / delays.llm_tokens_per_s
                    + delays.tts_first_ms
                )
                turn["server_added_ms"] = v2v - configured
            out["turns"].append(turn)
        if "stop" in text.lower() and len(log.said) > 1:
            clear = next((c for c in log.clears if c >= start), None)
            stale = [t for t in media if clear is not None and clear < t < end]
            out["barge_in"].append(
                {"clear_ms": None if clear is None else clear - start, "stale_frames": len(stale)}
            )
    # Playout underruns: persona audio that stopped and resumed within a second, i.e. frames
    # that arrived late (turn boundaries take longer: the caller speaks in between).
    gaps = [b.start_ms - a.end_ms for a, b in zip(log.heard, log.heard[1:], strict=False)]
    late = [g for g in gaps if 30 <= g < 1000]
    out["underruns"] = len(late)
    out["underrun_ms"] = sum(late)
    out["heard_ms"] = sum(h.end_ms - h.start_ms for h in log.heard)
    return out


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    k = (len(values) - 1) * p / 100
    lo, hi = int(k), min(int(k) + 1, len(values) - 1)
    return values[lo] + (values[hi] - values[lo]) * (k - lo)


def summarize(name: str, values: list[float]) -> dict[str, float]:
    return {
        "metric": name,
        "n": len(values),
        "p50": pct(values, 50),
        "p95": pct(values, 95),
        "p99": pct(values, 99),
        "max": max(values) if values else float("nan"),
        "mean": statistics.fmean(values) if values else float("nan"),
    }


def stage_values(results: list[dict[str, Any]]) -> dict[str, list[float]]:
    turns = [t for r in results for t in r["turns"]]
    barge = [b for r in results for b in r["barge_in"]]
    return {
        "greeting_ms": [r["greeting_ms"] for r in results if r["greeting_ms"] is not None],
        "voice_to_voice_ms": [t["voice_to_voice_ms"] for t in turns],
        "server_added_ms": [t["server_added_ms"] for t in turns if "server_added_ms" in t],
        "barge_in_clear_ms": [b["clear_ms"] for b in barge if b["clear_ms"] is not None],
    }
