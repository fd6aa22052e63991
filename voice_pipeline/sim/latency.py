"""Injectable latency for the stand-ins: time to first result/byte, per-token pace, jitter.

Defaults are zero (tests run as fast as the protocol allows); the benchmark sets realistic
values (endpointing 300 ms, LLM first token 150 ms at 60 tokens/s, TTS first byte 120 ms).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field


@dataclass
class Latency:
    first_ms: float = 0.0  # time to first result / first byte / first token
    per_token_ms: float = 0.0  # LLM: gap between tokens; TTS: unused
    realtime_factor: float = 0.0  # TTS: seconds of synthesis per second of audio after the first
    jitter_ms: float = 0.0  # uniform ± jitter added to each delay
    seed: int | None = None
    _rng: random.Random = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)

    def _j(self, ms: float) -> float:
        if self.jitter_ms:
            ms += self._rng.uniform(-self.jitter_ms, self.jitter_ms)
        return max(0.0, ms) / 1000

    def first_result(self) -> float:
        """Seconds before the first result/byte/token."""
        return self._j(self.first_ms)

    def per_token(self) -> float:
        return self._j(self.per_token_ms) if self.per_token_ms else 0.0
