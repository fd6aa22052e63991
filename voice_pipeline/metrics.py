"""A small Prometheus text-format registry (counters, gauges, histograms with labels).

In-process and allocation-light: the voice server updates these on the hot path, so there is
no locking (one event loop per process) and label tuples are the dict keys.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterable
from typing import TypeVar

LabelKey = tuple[str, ...]

DEFAULT_BUCKETS_MS = (1, 2, 5, 10, 20, 30, 50, 100, 200, 300, 500, 1000, 2000, 5000, 10000)


def _fmt_labels(names: tuple[str, ...], values: LabelKey, extra: str = "") -> str:
    parts = [f'{n}="{_escape(v)}"' for n, v in zip(names, values, strict=True)]
    if extra:
        parts.append(extra)
    return "{" + ",".join(parts) + "}" if parts else ""


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _num(v: float) -> str:
    if math.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    return repr(float(v)) if not float(v).is_integer() else str(int(v))


class _Metric:
    kind = ""

    def __init__(self, name: str, help_: str, labels: Iterable[str] = ()) -> None:
        self.name = name
        self.help = help_
        self.labels = tuple(labels)

    def header(self) -> list[str]:
        return [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} {self.kind}"]


class Counter(_Metric):
    kind = "counter"

    def __init__(self, name: str, help_: str, labels: Iterable[str] = ()) -> None:
        super().__init__(name, help_, labels)
        self.values: dict[LabelKey, float] = {}

    def inc(self, *label_values: str, amount: float = 1.0) -> None:
        self.values[label_values] = self.values.get(label_values, 0.0) + amount

    def render(self) -> list[str]:
        return self.header() + [
            f"{self.name}{_fmt_labels(self.labels, k)} {_num(v)}" for k, v in self.values.items()
        ]


class Gauge(Counter):
    kind = "gauge"

    def set(self, value: float, *label_values: str) -> None:
        self.values[label_values] = value

    def dec(self, *label_values: str, amount: float = 1.0) -> None:
        self.inc(*label_values, amount=-amount)


class Histogram(_Metric):
    kind = "histogram"

    def __init__(
        self,
        name: str,
        help_: str,
        labels: Iterable[str] = (),
        buckets: tuple[float, ...] = DEFAULT_BUCKETS_MS,
    ) -> None:
        super().__init__(name, help_, labels)
        self.buckets = tuple(sorted(buckets))
        self.series: dict[LabelKey, list[float]] = {}  # counts per bucket + [+Inf, sum]

    def observe(self, value: float, *label_values: str) -> None:
        s = self.series.get(label_values)
        if s is None:
            s = self.series[label_values] = [0.0] * (len(self.buckets) + 2)
        s[bisect.bisect_left(self.buckets, value)] += 1
        s[-1] += value

    def render(self) -> list[str]:
        out = self.header()
        for key, s in self.series.items():
            cumulative = 0.0
            for i, bound in enumerate((*self.buckets, math.inf)):
                cumulative += s[i]
                le = 'le="' + _num(bound) + '"'
                out.append(
                    f"{self.name}_bucket{_fmt_labels(self.labels, key, le)} {_num(cumulative)}"
                )
            out.append(f"{self.name}_sum{_fmt_labels(self.labels, key)} {_num(s[-1])}")
            out.append(f"{self.name}_count{_fmt_labels(self.labels, key)} {_num(cumulative)}")
        return out


_M = TypeVar("_M", bound=_Metric)


class Registry:
    def __init__(self) -> None:
        self._metrics: list[_Metric] = []

    def counter(self, name: str, help_: str, labels: Iterable[str] = ()) -> Counter:
        return self._add(Counter(name, help_, labels))

    def gauge(self, name: str, help_: str, labels: Iterable[str] = ()) -> Gauge:
        return self._add(Gauge(name, help_, labels))

    def histogram(
        self,
        name: str,
        help_: str,
        labels: Iterable[str] = (),
        buckets: tuple[float, ...] = DEFAULT_BUCKETS_MS,
    ) -> Histogram:
        return self._add(Histogram(name, help_, labels, buckets))

    def _add(self, metric: _M) -> _M:
        self._metrics.append(metric)
        return metric

    def render(self) -> str:
        lines: list[str] = []
        for m in self._metrics:
            lines.extend(m.render())  # type: ignore[attr-defined]
        return "\n".join(lines) + "\n"
