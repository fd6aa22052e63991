"""``python -m benchmarks soak``: many short calls one after another; the server's RSS and open
file descriptors at the start, every 10 % of the way, and at the end (leaks show as growth)."""

from __future__ import annotations

import asyncio
import time
from dataclasses import asdict
from typing import Any

from benchmarks.latency import machine, progress
from benchmarks.measure import measure, responder, short_call
from benchmarks.rig import BenchRig, Delays


async def run(calls: int, delays: Delays) -> dict[str, Any]:
    rig = BenchRig(delays)
    await rig.start()
    rig.stack.llm.responder = responder
    samples: list[dict[str, Any]] = []
    errors = 0
    t0 = time.monotonic()
    try:
        await rig.call(short_call(), "+15559990000")  # warm-up: caches, pools, first imports
        await asyncio.sleep(1)
        samples.append({"calls": 0, "rss_mb": rig.rss_mb(), "fds": rig.open_fds()})
        step = max(1, calls // 10)
        for i in range(1, calls + 1):
            log = await rig.call(short_call(), f"+1555{i:07d}")
            errors += len(measure(log, rig.delays)["errors"])
            progress("soak", i, calls)
            if i % step == 0 or i == calls:
                await asyncio.sleep(0.5)
                samples.append({"calls": i, "rss_mb": rig.rss_mb(), "fds": rig.open_fds()})
    finally:
        await rig.stop()
    first, last = samples[0], samples[-1]
    return {
        "benchmark": "soak",
        "calls": calls,
        "delays": asdict(delays),
        "wall_seconds": time.monotonic() - t0,
        "samples": samples,
        "rss_growth_percent": 100 * (last["rss_mb"] - first["rss_mb"]) / first["rss_mb"],
        "fd_growth": last["fds"] - first["fds"],
        "caller_errors": errors,
        "machine": machine(),
    }


def print_table(report: dict[str, Any]) -> None:
    s = report["samples"]
    print(f"\nsoak: {report['calls']} sequential calls in {report['wall_seconds']:.0f} s")
    print(
        f"RSS {s[0]['rss_mb']:.1f} MB → {s[-1]['rss_mb']:.1f} MB "
        f"({report['rss_growth_percent']:+.1f} %), open fds {s[0]['fds']} → {s[-1]['fds']}, "
        f"caller protocol errors {report['caller_errors']}"
    )
