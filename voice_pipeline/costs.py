"""Prices turned into money: exact ``Decimal`` arithmetic, cents and micro-cents, never float."""

from __future__ import annotations

from decimal import ROUND_CEILING, Decimal

from voice_pipeline.settings import Rates

CENT = Decimal(100)

# What one minute of conversation typically consumes (used only to *estimate* before a call;
# the meter charges what really happens): the caller's audio streamed the whole minute, about
# four turns of ~1,500 prompt tokens (persona prompt + history) and ~60 completion tokens each,
# and ~500 characters spoken.
TYPICAL_MINUTE = {"llm_in_tokens": 6000, "llm_out_tokens": 240, "tts_chars": 500}


def estimate_cents_per_minute(rates: Rates) -> Decimal:
    usd = (
        rates.twilio_usd_per_min
        + rates.deepgram_usd_per_min
        + rates.llm_input_usd_per_mtok * TYPICAL_MINUTE["llm_in_tokens"] / 1_000_000
        + rates.llm_output_usd_per_mtok * TYPICAL_MINUTE["llm_out_tokens"] / 1_000_000
        + rates.elevenlabs_usd_per_kchar * TYPICAL_MINUTE["tts_chars"] / 1000
    )
    return usd * CENT


def whole_cents(amount: Decimal) -> int:
    """Round a cent amount up to whole cents (estimates and reservations err high)."""
    return int(amount.to_integral_value(rounding=ROUND_CEILING))
