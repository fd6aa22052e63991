"""Typed application state (aiohttp ``AppKey``s), shared by the route modules."""

from __future__ import annotations

from dataclasses import dataclass, field

import asyncpg
from aiohttp import web

from control_api.metrics import Metrics
from control_api.ratelimit import RateLimiter
from control_api.twilio_rest import TwilioRest
from voice_pipeline.settings import Settings


@dataclass
class Limits:
    """Per-process rate limiters (see ratelimit.py for the multi-replica caveat)."""

    per_ip: RateLimiter = field(default_factory=lambda: RateLimiter(300, 60))
    per_user: RateLimiter = field(default_factory=lambda: RateLimiter(120, 60))
    login_account: RateLimiter = field(default_factory=lambda: RateLimiter(5, 15 * 60))
    login_ip: RateLimiter = field(default_factory=lambda: RateLimiter(30, 15 * 60))
    register_ip: RateLimiter = field(default_factory=lambda: RateLimiter(10, 60 * 60))


SETTINGS = web.AppKey("settings", Settings)
DB = web.AppKey("db", asyncpg.Pool)
METRICS = web.AppKey("metrics", Metrics)
LIMITS = web.AppKey("limits", Limits)
TWILIO = web.AppKey("twilio", TwilioRest)
