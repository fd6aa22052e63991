"""Guards the benchmark's arithmetic (not the system's speed): voice-to-voice and server-added
time from a caller log, stale frames after a clear, playout underruns, percentiles and the
event-loop lag quantile from Prometheus histogram buckets."""

from __future__ import annotations

from benchmarks.measure import PLAN, STOP_REPLY, first_clause_tokens, measure, pct
from benchmarks.rig import Delays, lag_quantile
from voice_pipeline.sim.twilio_media import Heard, StreamLog


def test_measure_reads_a_caller_log() -> None:
    log = StreamLog(stream_sid="MZ", call_sid="CA")
    log.said = [(1000.0, 2000.0, "Can you plan my workout"), (3000.0, 3500.0, "Wait, stop")]
    log.media_received = [(10.0, 160), (2700.0, 160), (3010.0, 160), (4200.0, 160)]
    log.clears = [3005.0]
    log.heard = [Heard(10, 900), Heard(950, 1000), Heard(2700, 3005), Heard(4200, 5000)]
    m = measure(log, Delays())
    assert m["greeting_ms"] == 10.0
    configured = 300 + 150 + (first_clause_tokens(PLAN) - 1) * 1000 / 60 + 120
    assert first_clause_tokens(PLAN) == 5 and first_clause_tokens(STOP_REPLY) == 4
    assert m["turns"][0]["voice_to_voice_ms"] == 700.0
    assert abs(m["turns"][0]["server_added_ms"] - (700 - configured)) < 1e-9
    assert m["barge_in"] == [{"clear_ms": 5.0, "stale_frames": 1}]  # the frame at 3010 ms
    assert m["underruns"] == 1 and m["underrun_ms"] == 50  # 900 → 950: late; 1000 → 2700: a turn


def test_percentiles_and_lag_quantiles() -> None:
    assert pct([1, 2, 3, 4], 50) == 2.5 and pct([5], 99) == 5
    before = {1: 10.0, 5: 15.0, 10: 20.0, float("inf"): 20.0}
    after = {1: 100.0, 5: 190.0, 10: 199.0, float("inf"): 200.0}
    assert lag_quantile(before, after, 0.5) == 1
    assert lag_quantile(before, after, 0.99) == 10
    assert lag_quantile(before, after, 1.0) == float("inf")
