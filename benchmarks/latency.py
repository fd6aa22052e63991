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

With ``--engines local`` the stand-ins answer with Whisper, llama.cpp and Piper (the caller's
lines spoken by Piper) and no configured delays: voice-to-voice is then what the offline stack
costs on this machine, and there is no server-added figure.
"""

from __future__ import annotations

import asyncio
import json
import os
import platform
import sys
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from benchmarks.measure import conversation, measure, responder, stage_values, summarize
from benchmarks.rig import BenchRig, Delays
from voice_pipeline.settings import REPO_ROOT
from voice_pipeline.sim.local import LocalEngines, load_engines
from voice_pipeline.sim.twilio_media import CallerScript

RESULTS = Path(__file__).parent / "results"


def machine() -> dict[str, Any]:
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
    }


def progress(label: str, done: int, total: int) -> None:
    bar = "#" * (30 * done // max(1, total))
    end = "\n" if done == total else ""
    print(f"\r  {label} [{bar:<30}] {done}/{total}", end=end, file=sys.stderr, flush=True)


async def run_calls(
    rig: BenchRig,
    calls: int,
    concurrency: int,
    ramp_s: float,
    script: Any = conversation,
    label: str = "calls",
) -> list[dict[str, Any]]:
    results: list[dict[str, Any]] = []
    sem = asyncio.Semaphore(concurrency)
    base = int(time.monotonic() * 1000) % 10_000_000

    async def one(i: int) -> None:
        # Calls arrive spread over time, as they would, not all in the same millisecond.
        await asyncio.sleep(i * ramp_s / max(1, concurrency - 1) if 0 < i < concurrency else 0)
        async with sem:
            s: CallerScript = script()
            log = await rig.call(s, f"+1{(base + i) % 10**10:010d}")
            results.append(measure(log, None if rig.engines else rig.delays))
            progress(label, len(results), calls)

    await asyncio.gather(*(one(i) for i in range(calls)))
    return results


async def spoken(engines: LocalEngines) -> Callable[[], CallerScript]:
    """The same conversation, spoken by Piper (for Whisper behind the Deepgram stand-in)."""
    lines = {
        u.text: await engines.synthesizer.speak_ulaw(u.text) for u in conversation().utterances
    }

    def script() -> CallerScript:
        s = conversation()
        for u in s.utterances:
            u.ulaw = lines[u.text]
        return s

    return script


async def run(
    calls: int, concurrency: int, delays: Delays, ramp_s: float = 5.0, engines: bool = False
) -> dict[str, Any]:
    local = None
    if engines:
        local = await load_engines(REPO_ROOT / ".data" / "models")
        if None in (local.recognizer, local.synthesizer, local.llm):
            raise SystemExit(f"local engines missing (run `make engines`): {local.summary}")
    rig = BenchRig(delays, engines=local)
    await rig.start()
    rig.stack.llm.responder = responder
    script = conversation if local is None else await spoken(local)
    cpu0, t0, driver0 = rig.cpu_seconds(), time.monotonic(), time.process_time()
    try:
        results = await run_calls(rig, calls, concurrency, ramp_s, script=script)
    finally:
        cpu = rig.cpu_seconds() - cpu0
        driver_cpu = time.process_time() - driver0
        wall = time.monotonic() - t0
        await rig.stop()
        if local is not None:
            local.close()
    stages = stage_values(results)
    barge = [b for r in results for b in r["barge_in"]]
    call_minutes = wall * min(concurrency, calls) / 60
    return {
        "benchmark": "latency",
        "calls": calls,
        "concurrency": concurrency,
        "ramp_s": ramp_s,
        "delays": asdict(delays) if local is None else None,
        "engines": local.summary if local is not None else None,
        "summary": [summarize(k, v) for k, v in stages.items()],
        "stale_frames_after_clear": sum(b["stale_frames"] for b in barge),
        "barge_ins_without_clear": sum(1 for b in barge if b["clear_ms"] is None),
        "underruns": sum(r["underruns"] for r in results),
        "caller_errors": sum(len(r["errors"]) for r in results),
        "server_cpu_seconds": cpu,
        "wall_seconds": wall,
        # The stand-ins and every scripted caller share this process: near 100 % of a core, the
        # caller-side timestamps themselves are late and the figures overstate the server's.
        "driver_cpu_seconds": driver_cpu,
        "server_cpu_seconds_per_call_minute": cpu / call_minutes if call_minutes else None,
        "machine": machine(),
        "stages": stages,
        "raw": results,
    }


def print_table(report: dict[str, Any]) -> None:
    print(
        f"\nlatency: {report['calls']} calls, concurrency {report['concurrency']}, "
        f"delays {report['delays'] or report['engines']}"
    )
    print(f"{'metric':<22}{'n':>5}{'p50':>9}{'p95':>9}{'p99':>9}{'max':>9}   (ms)")
    for row in report["summary"]:
        print(
            f"{row['metric']:<22}{row['n']:>5}{row['p50']:>9.1f}{row['p95']:>9.1f}"
            f"{row['p99']:>9.1f}{row['max']:>9.1f}"
        )
    print(
        f"stale frames after clear: {report['stale_frames_after_clear']}, barge-ins without "
        f"clear: {report['barge_ins_without_clear']}, playout underruns: {report['underruns']}, "
        f"caller protocol errors: {report['caller_errors']}"
    )
    print(
        f"CPU over {report['wall_seconds']:.1f} s wall: server "
        f"{report['server_cpu_seconds']:.1f} s, driver (stand-ins + callers) "
        f"{report['driver_cpu_seconds']:.1f} s"
    )


def save(report: dict[str, Any], name: str) -> Path:
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(report, indent=1, default=str))
    return path
