"""``python -m benchmarks scale``: ramp concurrent calls until the server-added p99 passes
50 ms or frames arrive late; per level: latency, server CPU seconds per call-minute, RSS per
live call, event-loop lag, playout underruns (late frames) and stale frames after clear."""

from __future__ import annotations

import asyncio
import time
from dataclasses import asdict
from typing import Any

from benchmarks.latency import machine, run_calls
from benchmarks.measure import pct, responder, stage_values
from benchmarks.rig import BenchRig, Delays, lag_quantile

P99_LIMIT_MS = 50.0


async def run(levels: list[int], delays: Delays, ramp_s: float) -> dict[str, Any]:
    rig = BenchRig(delays)
    await rig.start()
    rig.stack.llm.responder = responder
    out: list[dict[str, Any]] = []
    try:
        for level in levels:
            rss0, cpu0, lag0 = rig.rss_mb(), rig.cpu_seconds(), await rig.loop_lag_buckets()
            peak = rss0
            t0 = time.monotonic()
            task = asyncio.create_task(
                run_calls(rig, level, level, ramp_s, label=f"{level:>4} calls")
            )
            while not task.done():
                await asyncio.sleep(0.5)
                peak = max(peak, rig.rss_mb())
            results = task.result()
            wall = time.monotonic() - t0
            cpu = rig.cpu_seconds() - cpu0
            lag1 = await rig.loop_lag_buckets()
            stages = stage_values(results)
            added = stages["server_added_ms"]
            row = {
                "concurrency": level,
                "calls": len(results),
                "wall_s": wall,
                "server_added_p50_ms": pct(added, 50),
                "server_added_p99_ms": pct(added, 99),
                "voice_to_voice_p99_ms": pct(stages["voice_to_voice_ms"], 99),
                "clear_p99_ms": pct(stages["barge_in_clear_ms"], 99),
                "cpu_s_per_call_minute": cpu / (wall * level / 60),
                "rss_mb_start": rss0,
                "rss_mb_peak": peak,
                "rss_mb_per_live_call": (peak - rss0) / level,
                "loop_lag_p99_ms_le": lag_quantile(lag0, lag1, 0.99),
                "loop_lag_max_ms_le": lag_quantile(lag0, lag1, 1.0),
                "underruns": sum(r["underruns"] for r in results),
                "stale_frames_after_clear": sum(
                    b["stale_frames"] for r in results for b in r["barge_in"]
                ),
                "caller_errors": sum(len(r["errors"]) for r in results),
            }
            out.append(row)
            if row["server_added_p99_ms"] > P99_LIMIT_MS or row["underruns"]:
                break
            await asyncio.sleep(2)  # let the previous level's calls close their books
    finally:
        await rig.stop()
    return {
        "benchmark": "scale",
        "delays": asdict(delays),
        "ramp_s": ramp_s,
        "p99_limit_ms": P99_LIMIT_MS,
        "levels": out,
        "machine": machine(),
    }


def print_table(report: dict[str, Any]) -> None:
    print("\nscale (stops when server-added p99 > 50 ms or frames arrive late)")
    print(
        f"{'calls':>6}{'added p50':>11}{'added p99':>11}{'CPU s/call-min':>16}"
        f"{'RSS MB/call':>13}{'lag p99 ≤':>11}{'underruns':>11}"
    )
    for lv in report["levels"]:
        print(
            f"{lv['concurrency']:>6}{lv['server_added_p50_ms']:>11.1f}"
            f"{lv['server_added_p99_ms']:>11.1f}{lv['cpu_s_per_call_minute']:>16.3f}"
            f"{lv['rss_mb_per_live_call']:>13.2f}{lv['loop_lag_p99_ms_le']:>11.0f}"
            f"{lv['underruns']:>11}"
        )
