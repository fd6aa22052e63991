"""``python -m benchmarks latency [--calls N] [--concurrency C]``."""

from __future__ import annotations

import argparse
import asyncio
import sys

from voice_pipeline.logs import configure_logging


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("latency", help="voice-to-voice, server-added, barge-in and greeting times")
    p.add_argument("--calls", type=int, default=20)
    p.add_argument("--concurrency", type=int, default=1)
    p.add_argument("--endpointing-ms", type=int, default=300)
    p.add_argument("--llm-first-ms", type=float, default=150)
    p.add_argument("--llm-tokens-per-s", type=float, default=60)
    p.add_argument("--tts-first-ms", type=float, default=120)
    p.add_argument(
        "--ramp-s",
        type=float,
        default=5.0,
        help="spread the first calls' arrivals over this many seconds",
    )
    for name in ("scale", "soak"):
        sub.add_parser(name, help="not written yet (issue #8)")
    args = parser.parse_args()
    if args.command != "latency":
        print(f"benchmarks {args.command}: not written yet", file=sys.stderr)
        return 2
    configure_logging("console", "error")
    from benchmarks.latency import Delays, print_table, run, save

    delays = Delays(
        args.endpointing_ms, args.llm_first_ms, args.llm_tokens_per_s, args.tts_first_ms
    )
    try:
        import uvloop

        report = uvloop.run(run(args.calls, args.concurrency, delays, args.ramp_s))
    except ImportError:
        report = asyncio.run(run(args.calls, args.concurrency, delays, args.ramp_s))
    print_table(report)
    print(f"results: {save(report)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
