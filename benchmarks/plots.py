"""PNG plots of benchmark results (matplotlib, headless)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt


def latency_cdf(stages: dict[str, list[float]], path: Path, title: str) -> Path:
    fig, ax = plt.subplots(figsize=(8, 5))
    for name, values in stages.items():
        if not values:
            continue
        xs = sorted(values)
        ys = [(i + 1) / len(xs) for i in range(len(xs))]
        ax.step(xs, ys, where="post", label=f"{name} (n={len(xs)})")
    ax.set_xscale("symlog", linthresh=10)
    ax.set_xlabel("ms")
    ax.set_ylabel("fraction of samples ≤ x")
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def scale_plot(levels: list[dict[str, Any]], path: Path) -> Path:
    fig, ax1 = plt.subplots(figsize=(8, 5))
    xs = [lv["concurrency"] for lv in levels]
    ax1.plot(xs, [lv["server_added_p99_ms"] for lv in levels], "o-", label="server-added p99 (ms)")
    ax1.plot(xs, [lv["server_added_p50_ms"] for lv in levels], "s--", label="server-added p50 (ms)")
    ax1.axhline(50, color="grey", linestyle=":", label="50 ms limit")
    ax1.set_xlabel("concurrent calls")
    ax1.set_ylabel("ms")
    ax2 = ax1.twinx()
    ax2.plot(
        xs,
        [lv["cpu_s_per_call_minute"] for lv in levels],
        "^-",
        color="tab:red",
        label="server CPU s per call-minute",
    )
    ax2.set_ylabel("CPU s per call-minute", color="tab:red")
    lines = ax1.get_legend_handles_labels()[0] + ax2.get_legend_handles_labels()[0]
    labels = ax1.get_legend_handles_labels()[1] + ax2.get_legend_handles_labels()[1]
    ax1.legend(lines, labels, loc="upper left", fontsize=8)
    ax1.set_title("scale: latency and CPU against concurrency")
    ax1.grid(True, alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
