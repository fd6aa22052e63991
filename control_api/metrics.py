"""The control API's Prometheus metrics."""

from __future__ import annotations

from voice_pipeline.metrics import Registry


class Metrics:
    def __init__(self) -> None:
        self.registry = Registry()
        self.requests = self.registry.counter(
            "callmeback_api_requests_total",
            "HTTP requests by route and status",
            ("route", "status"),
        )
        self.latency = self.registry.histogram(
            "callmeback_api_request_ms", "HTTP request latency in ms by route", ("route",)
        )
        self.calls_triggered = self.registry.counter(
            "callmeback_calls_triggered_total", "Calls triggered, by outcome", ("outcome",)
        )
        self.twilio_callbacks = self.registry.counter(
            "callmeback_twilio_status_callbacks_total",
            "Twilio status callbacks by CallStatus",
            ("status",),
        )
        self.scheduler_fired = self.registry.counter(
            "callmeback_scheduled_calls_fired_total",
            "Scheduled calls fired, by outcome",
            ("outcome",),
        )
