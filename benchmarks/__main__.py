"""``python -m benchmarks {latency,scale,soak}`` — see README, "Benchmarks"."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Coroutine
from typing import Any

from voice_pipeline.logs import configure_logging


def _run(coro: Coroutine[Any, Any, dict[str, Any]]) -> dict[str, Any]:
    try:
        import uvloop

        return uvloop.run(coro)
    except ImportError:
        return asyncio.run(coro)


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks")
    sub = parser.add_subparsers(dest="command", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--endpointing-ms", type=int, default=300)
    common.add_argument("--llm-first-ms", type=float, default=150)
    common.add_argument("--llm-tokens-per-s", type=float, default=60)
    common.add_argument("--tts-first-ms", type=float, default=120)
    common.add_argument(
        "--ramp-s",
        type=float,
        default=5.0,
        help="spread the first calls' arrivals over this many seconds",
    )
    p = sub.add_parser("latency", parents=[common], help="voice-to-voice, barge-in, greeting")
    p.add_argument("--calls", type=int, default=20)
    p.add_argument("--concurrency", type=int, default=1)
    p.add_argument(
        "--engines",
        choices=("scripted", "local"),
        default="scripted",
        help="local: Whisper, llama.cpp and Piper behind the stand-ins (make engines first)",
    )
    p = sub.add_parser("scale", parents=[common], help="ramp concurrent calls")
    p.add_argument("--levels", default="10,50,100,200,400,800")
    p = sub.add_parser("soak", parents=[common], help="sequential calls; RSS and fds")
    p.add_argument("--calls", type=int, default=1000)
    args = parser.parse_args()
    configure_logging("console", "error")

    from benchmarks import latency, plots, scale, soak
    from benchmarks.rig import Delays

    delays = Delays(
        args.endpointing_ms, args.llm_first_ms, args.llm_tokens_per_s, args.tts_first_ms
    )
    if args.command == "latency":
        report = _run(
            latency.run(
                args.calls, args.concurrency, delays, args.ramp_s, engines=args.engines == "local"
            )
        )
        latency.print_table(report)
        suffix = "-local" if args.engines == "local" else ""
        path = latency.save(report, f"latency-c{args.concurrency}{suffix}")
        png = plots.latency_cdf(
            report.pop("stages"),
            path.with_suffix(".png"),
            f"latency CDF per stage ({args.calls} calls, concurrency {args.concurrency})",
        )
    elif args.command == "scale":
        levels = [int(x) for x in args.levels.split(",")]
        report = _run(scale.run(levels, delays, args.ramp_s))
        scale.print_table(report)
        path = latency.save(report, "scale")
        png = plots.scale_plot(report["levels"], path.with_suffix(".png"))
    else:
        report = _run(soak.run(args.calls, delays))
        soak.print_table(report)
        path = latency.save(report, "soak")
        png = None
    print(f"results: {path}" + (f"\nplot: {png}" if png else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
