"""Token-bucket rate limits keyed by IP, user or account, answering 429 with ``Retry-After``.

In-process: correct for one API process. Several replicas behind a balancer each enforce the
limit on their share (a documented limitation; per-call-day and credit limits, which matter for
money, are enforced in PostgreSQL and hold across replicas).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

from control_api.errors import ApiError


@dataclass(slots=True)
class _Bucket:
    tokens: float
    updated: float


class RateLimiter:
    """``capacity`` requests per ``period`` seconds per key, refilled continuously."""

    def __init__(
        self,
        capacity: int,
        period: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        max_keys: int = 100_000,
    ) -> None:
        self.capacity = float(capacity)
        self.rate = capacity / period
        self.clock = clock
        self.max_keys = max_keys
        self._buckets: dict[str, _Bucket] = {}

    def _bucket(self, key: str, now: float) -> _Bucket:
        b = self._buckets.get(key)
        if b is None:
            if len(self._buckets) >= self.max_keys:
                self._evict(now)
            b = self._buckets[key] = _Bucket(self.capacity, now)
        else:
            b.tokens = min(self.capacity, b.tokens + (now - b.updated) * self.rate)
            b.updated = now
        return b

    def _evict(self, now: float) -> None:
        # Drop full buckets (idle keys); if none are full, the oldest half.
        full = [
            k
            for k, b in self._buckets.items()
            if b.tokens + (now - b.updated) * self.rate >= self.capacity
        ]
        victims = (
            full
            or sorted(self._buckets, key=lambda k: self._buckets[k].updated)[
                : len(self._buckets) // 2
            ]
        )
        for k in victims:
            del self._buckets[k]

    def retry_after(self, key: str) -> float:
        """Seconds until one token is available (0 if available now). Does not consume."""
        b = self._bucket(key, self.clock())
        return 0.0 if b.tokens >= 1 else (1 - b.tokens) / self.rate

    def hit(self, key: str, cost: float = 1.0) -> float:
        """Consume ``cost``; return 0 if allowed, else the seconds to wait (nothing consumed)."""
        b = self._bucket(key, self.clock())
        if b.tokens >= cost:
            b.tokens -= cost
            return 0.0
        return (cost - b.tokens) / self.rate

    def check(self, key: str, what: str) -> None:
        wait = self.hit(key)
        if wait:
            raise too_many(what, wait)

    def reset(self, key: str) -> None:
        self._buckets.pop(key, None)


def too_many(what: str, wait: float) -> ApiError:
    seconds = max(1, math.ceil(wait))
    return ApiError(
        429,
        "rate_limited",
        f"too many {what}; retry in {seconds} s",
        headers={"Retry-After": str(seconds)},
    )
