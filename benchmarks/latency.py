"""``python -m benchmarks latency``: voice-to-voice, server-added, barge-in and greeting times.

Each call: greeting; the caller asks for a plan; while the persona answers, the caller barges in
("wait, stop"); the persona answers that; the caller hangs up. Measured on the caller's side
(the Twilio stand-in), i.e. what a phone would experience:

- greeting: stream start → first persona audio frame received;
- voice-to-voice: end of caller speech → first persona audio frame received;
- server-added: voice-to-voice minus the stand-ins' configured delays (endpointing, LLM first
  token, the tokens of the first clause at the configured rate, TTS first byte);
- barge-in: start of the caller's interrupting speech → ``clear`` received; stale frames: persona
  audio received after the ``clear`` and before the caller finished speaking (must be 0).
"""

from __future__ import annotations

import asyncio
import json
import platform
import re
import statistics
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from benchmarks.rig import BenchRig, Delays
from voice_pipeline.clauses import ClauseSplitter
from voice_pipeline.sim.llm import Reply
from voice_pipeline.sim.twilio_media import CallerScript, StreamLog, Utterance

PLAN = (
    "Sure, here is the plan. First warm up for ten minutes, then three sets of squats, "
    "then lunges, and finish with a good long stretch."
)
STOP_REPLY = "No problem, stopping there. What would you like instead?"
RESULTS = Path(__file__).parent / "results"


def first_clause_tokens(text: str) -> int:
    clause = ClauseSplitter().push(text)[0]
    return len(re.findall(r"\s*\S+", clause))


def responder(messages: list[dict[str, Any]], tools: Any) -> Reply:
    last = str(messages[-1].get("content", "")).lower()
    return Reply(STOP_REPLY if "stop" in last else PLAN)


def script() -> CallerScript:
    return CallerScript(
        utterances=[
            Utterance("Can you plan my workout for today", after_silence=0.4),
            Utterance("Wait, actually stop", barge_in_after=1.5),
            Utterance("Okay thanks", after_silence=0.4),
        ],
        hang_up_after=0.3,
        max_seconds=60,
    )


def measure(log: StreamLog, delays: Delays) -> dict[str, Any]:
    media = [t for t, _ in log.media_received]
    out: dict[str, Any] = {
        "greeting_ms": media[0] if media else None,
        "turns": [],
        "barge_in": [],
        "errors": list(log.errors),
    }
    per_token = 1000 / delays.llm_tokens_per_s
    for start, end, text in log.said:
        reply = STOP_REPLY if "stop" in text.lower() else PLAN
        configured = (
            delays.endpointing_ms
            + delays.llm_first_ms
            + (first_clause_tokens(reply) - 1) * per_token
            + delays.tts_first_ms
        )
        first = next((t for t in media if t > end), None)
        if first is not None:
            v2v = first - end
            out["turns"].append({"voice_to_voice_ms": v2v, "server_added_ms": v2v - configured})
        if "stop" in text.lower():
            clear = next((c for c in log.clears if c >= start), None)
            stale = [t for t in media if clear is not None and clear < t < end]
            out["barge_in"].append(
                {"clear_ms": None if clear is None else clear - start, "stale_frames": len(stale)}
            )
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


def cpu_seconds(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        import os

        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return float("nan")


async def run(calls: int, concurrency: int, delays: Delays, ramp_s: float = 5.0) -> dict[str, Any]:
    rig = BenchRig(delays)
    await rig.start()
    rig.stack.llm.responder = responder
    results: list[dict[str, Any]] = []
    done = 0
    sem = asyncio.Semaphore(concurrency)
    cpu0, t0 = cpu_seconds(rig.server_pid()), time.monotonic()
    driver0 = time.process_time()

    async def one(i: int) -> None:
        nonlocal done
        # Calls arrive spread over time, as they would, not all in the same millisecond.
        await asyncio.sleep(i * ramp_s / max(1, concurrency - 1) if 0 < i < concurrency else 0)
        async with sem:
            log = await rig.call(script(), f"+1555{i:07d}")
            results.append(measure(log, delays))
            done += 1
            bar = "#" * (30 * done // calls)
            print(f"\r  calls [{bar:<30}] {done}/{calls}", end="", file=sys.stderr, flush=True)

    try:
        await asyncio.gather(*(one(i) for i in range(calls)))
    finally:
        print(file=sys.stderr)
        cpu = cpu_seconds(rig.server_pid()) - cpu0
        driver_cpu = time.process_time() - driver0
        wall = time.monotonic() - t0
        await rig.stop()
    turns = [t for r in results for t in r["turns"]]
    barge = [b for r in results for b in r["barge_in"]]
    summary = [
        summarize(
            "greeting_ms", [r["greeting_ms"] for r in results if r["greeting_ms"] is not None]
        ),
        summarize("voice_to_voice_ms", [t["voice_to_voice_ms"] for t in turns]),
        summarize("server_added_ms", [t["server_added_ms"] for t in turns]),
        summarize("barge_in_clear_ms", [b["clear_ms"] for b in barge if b["clear_ms"] is not None]),
    ]
    call_minutes = wall * min(concurrency, calls) / 60
    return {
        "benchmark": "latency",
        "ramp_s": ramp_s,
        "calls": calls,
        "concurrency": concurrency,
        "delays": asdict(delays),
        "summary": summary,
        "stale_frames_after_clear": sum(b["stale_frames"] for b in barge),
        "barge_ins_without_clear": sum(1 for b in barge if b["clear_ms"] is None),
        "caller_errors": sum(len(r["errors"]) for r in results),
        # The stand-ins and every scripted caller share this process: near 100 % of a core, the
        # caller-side timestamps themselves are late and the figures overstate the server's.
        "driver_cpu_seconds": driver_cpu,
        "server_cpu_seconds": cpu,
        "wall_seconds": wall,
        "server_cpu_seconds_per_call_minute": cpu / call_minutes if call_minutes else None,
        "machine": {
            "python": platform.python_version(),
            "platform": platform.platform(),
            "cpus": __import__("os").cpu_count(),
        },
        "raw": results,
    }


def print_table(report: dict[str, Any]) -> None:
    print(
        f"\nlatency: {report['calls']} calls, concurrency {report['concurrency']}, "
        f"delays {report['delays']}"
    )
    print(f"{'metric':<22}{'n':>5}{'p50':>9}{'p95':>9}{'p99':>9}{'max':>9}   (ms)")
    for row in report["summary"]:
        print(
            f"{row['metric']:<22}{row['n']:>5}{row['p50']:>9.1f}{row['p95']:>9.1f}"
            f"{row['p99']:>9.1f}{row['max']:>9.1f}"
        )
    print(
        f"stale frames after clear: {report['stale_frames_after_clear']}, barge-ins without clear: "
        f"{report['barge_ins_without_clear']}, caller protocol errors: {report['caller_errors']}"
    )
    print(
        f"CPU over {report['wall_seconds']:.1f} s wall: server "
        f"{report['server_cpu_seconds']:.1f} s, driver (stand-ins + callers) "
        f"{report['driver_cpu_seconds']:.1f} s"
    )


def save(report: dict[str, Any]) -> Path:
    RESULTS.mkdir(exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path = RESULTS / f"latency-c{report['concurrency']}-{stamp}.json"
    path.write_text(json.dumps(report, indent=1, default=str))
    return path
