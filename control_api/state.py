"""Typed application state (aiohttp ``AppKey``s), shared by the route modules."""

from __future__ import annotations

from typing import TYPE_CHECKING

import asyncpg
from aiohttp import web

from voice_pipeline.settings import Settings

if TYPE_CHECKING:
    from control_api.metrics import Metrics

SETTINGS = web.AppKey("settings", Settings)
DB = web.AppKey("db", asyncpg.Pool)
METRICS: web.AppKey[Metrics] = web.AppKey("metrics")
