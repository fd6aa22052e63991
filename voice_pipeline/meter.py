"""The per-call cost meter and budget, sans I/O: provider usage in, priced events and budget
signals out. Money is integer micro-cents (1 ¢ = 1,000,000 µ¢); rates are ``Decimal``; each
event is rounded once (half up) and every total is a sum of events, so a breakdown equals the
sum of its events exactly.

Units (seed 004 §8.1, protocols.md): Twilio per *started* minute, Deepgram per second of audio
streamed, LLM per input and output token (from the streamed usage), ElevenLabs per character
sent for synthesis.

Budget: the call may spend ``budget_microcents``. :meth:`CostMeter.can_afford` lets the session
refuse a TTS clause that would cross it (so text is never bought past the limit), and every
update reports ``warn`` once at ``warn_percent`` and ``exhausted`` when the total reaches the
budget; the session then says a short goodbye (not counted against the check) and hangs up.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal

from voice_pipeline.settings import Rates

MICROCENTS_PER_USD = Decimal(100_000_000)

PROVIDERS = ("twilio", "deepgram", "cerebras", "elevenlabs")


@dataclass(frozen=True, slots=True)
class CostEvent:
    seq: int
    provider: str
    unit: str
    quantity: Decimal
    cost_microcents: int


class BudgetSignal(enum.Enum):
    NONE = "none"
    WARN = "warn"
    EXHAUSTED = "exhausted"


def _round(value: Decimal) -> int:
    return int(value.quantize(Decimal(1), rounding=ROUND_HALF_UP))


@dataclass
class CostMeter:
    rates: Rates
    budget_microcents: int | None = None  # None: no per-call limit
    warn_percent: int = 75
    auto_cutoff: bool = True
    events: list[CostEvent] = field(default_factory=list)
    total_microcents: int = 0
    by_provider: dict[str, int] = field(default_factory=lambda: dict.fromkeys(PROVIDERS, 0))
    usage: dict[str, Decimal] = field(default_factory=dict)
    minutes_charged: int = 0
    warned: bool = False
    exhausted: bool = False
    _pending: list[CostEvent] = field(default_factory=list)
    _seq: int = 0

    # ------------------------------------------------------------------ pricing
    def _add(self, provider: str, unit: str, quantity: Decimal, usd: Decimal) -> BudgetSignal:
        if quantity <= 0:
            return BudgetSignal.NONE
        cost = _round(usd * MICROCENTS_PER_USD)
        event = CostEvent(self._seq, provider, unit, quantity, cost)
        self._seq += 1
        self.events.append(event)
        self._pending.append(event)
        self.total_microcents += cost
        self.by_provider[provider] += cost
        key = f"{provider}:{unit}"
        self.usage[key] = self.usage.get(key, Decimal(0)) + quantity
        return self._signal()

    def telephony_until(self, seconds: float) -> BudgetSignal:
        """Charge every minute started by ``seconds`` of call time (the first at 0)."""
        started = int(seconds // 60) + 1
        signal = BudgetSignal.NONE
        while self.minutes_charged < started:
            self.minutes_charged += 1
            signal = self._max(
                signal, self._add("twilio", "minute", Decimal(1), self.rates.twilio_usd_per_min)
            )
        return signal

    def stt_seconds(self, seconds: float) -> BudgetSignal:
        q = Decimal(str(round(seconds, 6)))
        return self._add("deepgram", "audio_second", q, self.rates.deepgram_usd_per_min * q / 60)

    def llm_tokens(self, input_tokens: int, output_tokens: int) -> BudgetSignal:
        a = self._add(
            "cerebras",
            "input_token",
            Decimal(input_tokens),
            self.rates.llm_input_usd_per_mtok * input_tokens / 1_000_000,
        )
        b = self._add(
            "cerebras",
            "output_token",
            Decimal(output_tokens),
            self.rates.llm_output_usd_per_mtok * output_tokens / 1_000_000,
        )
        return self._max(a, b)

    def tts_cost(self, characters: int) -> int:
        return _round(self.rates.elevenlabs_usd_per_kchar * characters / 1000 * MICROCENTS_PER_USD)

    def tts_characters(self, characters: int) -> BudgetSignal:
        return self._add(
            "elevenlabs",
            "character",
            Decimal(characters),
            self.rates.elevenlabs_usd_per_kchar * characters / 1000,
        )

    # ------------------------------------------------------------------ budget
    def can_afford(self, microcents: int) -> bool:
        if self.budget_microcents is None or not self.auto_cutoff:
            return True
        return self.total_microcents + microcents <= self.budget_microcents

    def _signal(self) -> BudgetSignal:
        budget = self.budget_microcents
        if budget is None:
            return BudgetSignal.NONE
        if not self.exhausted and self.auto_cutoff and self.total_microcents >= budget:
            self.exhausted = True
            return BudgetSignal.EXHAUSTED
        if not self.warned and self.total_microcents * 100 >= budget * self.warn_percent:
            self.warned = True
            return BudgetSignal.WARN
        return BudgetSignal.NONE

    @staticmethod
    def _max(a: BudgetSignal, b: BudgetSignal) -> BudgetSignal:
        order = (BudgetSignal.NONE, BudgetSignal.WARN, BudgetSignal.EXHAUSTED)
        return a if order.index(a) >= order.index(b) else b

    def take_pending(self) -> list[CostEvent]:
        """Events not yet written (the writer batches them)."""
        out, self._pending = self._pending, []
        return out


def cents(microcents: int) -> Decimal:
    return Decimal(microcents) / 1_000_000
