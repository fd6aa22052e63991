"""Guards the cost meter: exact micro-cent pricing per provider unit, totals that equal the sum
of events, telephony per started minute, the warning once, exhaustion once, and refusing text
that would cross the budget."""

from __future__ import annotations

from decimal import Decimal

from voice_pipeline.meter import BudgetSignal, CostMeter, cents
from voice_pipeline.settings import Rates

RATES = Rates(
    Decimal("0.0130"), Decimal("0.0048"), Decimal("0.35"), Decimal("0.75"), Decimal("0.05")
)


def test_prices_are_exact_and_totals_are_sums_of_events() -> None:
    m = CostMeter(RATES)
    m.telephony_until(0)  # first minute at answer
    m.telephony_until(59.9)
    m.telephony_until(60.0)  # second minute starts
    m.stt_seconds(90)
    m.llm_tokens(1500, 60)
    m.tts_characters(200)
    assert m.minutes_charged == 2
    by = {(e.provider, e.unit): e.cost_microcents for e in m.events}
    assert by[("twilio", "minute")] == 1_300_000  # 1.3 ¢
    assert by[("deepgram", "audio_second")] == 720_000  # 90 s × 0.0048 $/min = 0.72 ¢
    assert by[("cerebras", "input_token")] == 52_500  # 1500 × 0.35 $/M = 0.0525 ¢
    assert by[("cerebras", "output_token")] == 4_500
    assert by[("elevenlabs", "character")] == 1_000_000  # 200 × 0.05 $/K = 1 ¢
    assert m.total_microcents == sum(e.cost_microcents for e in m.events)
    assert m.total_microcents == sum(m.by_provider.values())
    assert cents(m.total_microcents) == Decimal("4.377")
    assert [e.seq for e in m.events] == list(range(len(m.events)))
    assert len(m.take_pending()) == len(m.events) and m.take_pending() == []


def test_warn_once_then_exhaust_once_and_refuse_text_past_the_budget() -> None:
    m = CostMeter(RATES, budget_microcents=4_000_000, warn_percent=75)  # 4 ¢
    assert m.telephony_until(0) is BudgetSignal.NONE  # 1.3 ¢
    assert m.tts_characters(340) is BudgetSignal.WARN  # +1.7 ¢ = 3.0 ¢ (75 %)
    assert m.tts_characters(10) is BudgetSignal.NONE  # warned already
    assert m.can_afford(m.tts_cost(180)) is True  # 3.05 + 0.9 = 3.95 ¢
    assert m.can_afford(m.tts_cost(200)) is False  # would be 4.05 ¢
    assert m.telephony_until(61) is BudgetSignal.EXHAUSTED
    assert m.stt_seconds(5) is BudgetSignal.NONE  # exhausted once
    off = CostMeter(RATES, budget_microcents=1, auto_cutoff=False)
    assert off.telephony_until(0) is BudgetSignal.WARN and off.can_afford(10**9)
