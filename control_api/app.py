"""The aiohttp application: state, middlewares, routes, and the pool's lifetime.

``create_app(settings)`` is all a server or a test needs. The database pool lives in a
``cleanup_ctx`` (opened on startup, closed on shutdown); a test can pass its own pool.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import asyncpg
from aiohttp import web

from control_api.auth import client_ip
from control_api.errors import ApiError, error_response
from control_api.metrics import Metrics
from control_api.ratelimit import too_many
from control_api.state import DB, LIMITS, METRICS, SETTINGS, TWILIO, Limits
from control_api.twilio_rest import TwilioRest
from voice_pipeline.db import create_pool, resolve_dsn
from voice_pipeline.logs import get_logger
from voice_pipeline.settings import Settings

log = get_logger("control_api")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

MAX_BODY_BYTES = 64 * 1024  # every JSON body and Twilio form fits easily; bigger is refused (413)


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except ApiError as err:
        return error_response(err.status, err.code, err.message, err.headers, err.details)
    except web.HTTPRequestEntityTooLarge:
        return error_response(413, "payload_too_large", f"body exceeds {MAX_BODY_BYTES} bytes")
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status, "http_error")
        keep = {k: v for k, v in exc.headers.items() if k in ("Allow", "Retry-After")}
        return error_response(exc.status, code, exc.reason, keep)
    except (
        OSError,
        asyncpg.ConnectionDoesNotExistError,
        asyncpg.CannotConnectNowError,
        asyncpg.TooManyConnectionsError,
    ):
        log.error("database_unavailable", path=request.path)
        return error_response(503, "database_unavailable", "database unavailable, try again")
    except Exception:
        log.exception("unhandled_error", path=request.path, method=request.method)
        return error_response(500, "internal_error", "internal server error")


@web.middleware
async def metrics_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    start = time.perf_counter()
    status = 500
    try:
        response = await handler(request)
        status = response.status
        return response
    finally:
        info = request.match_info.route.resource
        route = info.canonical if info is not None else "unmatched"
        metrics = request.app[METRICS]
        metrics.requests.inc(route, str(status))
        metrics.latency.observe((time.perf_counter() - start) * 1000, route)


# Twilio's webhooks (signed, bursty, from many IPs) and probes are not rate limited per IP.
_UNLIMITED_PREFIXES = ("/api/voice/", "/health", "/ready", "/metrics")


@web.middleware
async def ip_rate_limit_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    if not request.path.startswith(_UNLIMITED_PREFIXES):
        wait = request.app[LIMITS].per_ip.hit(client_ip(request))
        if wait:
            err = too_many("requests from this address", wait)
            return error_response(err.status, err.code, err.message, err.headers)
    return await handler(request)


def cors_middleware(origins: tuple[str, ...]) -> Callable[..., Awaitable[web.StreamResponse]]:
    allowed = frozenset(origins)

    @web.middleware
    async def cors(request: web.Request, handler: Handler) -> web.StreamResponse:
        origin = request.headers.get("Origin")
        ok = origin is not None and (origin in allowed or "*" in allowed)
        if request.method == "OPTIONS" and "Access-Control-Request-Method" in request.headers:
            if not ok:
                return error_response(403, "cors_forbidden", "origin not allowed")
            response: web.StreamResponse = web.Response(status=204)
            response.headers["Access-Control-Allow-Methods"] = (
                "GET, POST, PUT, PATCH, DELETE, OPTIONS"
            )
            response.headers["Access-Control-Allow-Headers"] = "Authorization, Content-Type"
            response.headers["Access-Control-Max-Age"] = "600"
        else:
            response = await handler(request)
        if ok and origin is not None:
            response.headers["Access-Control-Allow-Origin"] = origin
            response.headers["Access-Control-Allow-Credentials"] = "true"
            response.headers["Vary"] = "Origin"
        return response

    return cors


def _pool_ctx(settings: Settings) -> Callable[[web.Application], AsyncIterator[None]]:
    async def ctx(app: web.Application) -> AsyncIterator[None]:
        dsn = await resolve_dsn(settings)
        pool = await create_pool(dsn, settings)
        app[DB] = pool
        log.info("database_pool_open", min=settings.db_pool_min, max=settings.db_pool_max)
        try:
            yield
        finally:
            await pool.close()
            log.info("database_pool_closed")

    return ctx


async def _twilio_ctx(app: web.Application) -> AsyncIterator[None]:
    if TWILIO not in app:
        app[TWILIO] = TwilioRest(app[SETTINGS])
    yield
    await app[TWILIO].close()


async def _maintenance_ctx(app: web.Application) -> AsyncIterator[None]:
    """Hourly housekeeping: purge revoked tokens that have expired anyway."""
    from control_api.auth import purge_expired_tokens

    async def loop() -> None:
        while True:
            try:
                purged = await purge_expired_tokens(app[DB])
                if purged:
                    log.info("token_blacklist_purged", rows=purged)
            except (OSError, asyncpg.PostgresError):
                log.warning("token_blacklist_purge_failed")
            await asyncio.sleep(3600)

    task = asyncio.create_task(loop(), name="maintenance")
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


def create_app(
    settings: Settings,
    *,
    pool: asyncpg.Pool | None = None,
    twilio: TwilioRest | None = None,
    limits: Limits | None = None,
    scheduler_interval: float = 5.0,
) -> web.Application:
    """The control API. Tests may inject a pool, a Twilio client and limits; a scheduler
    interval of 0 disables the scheduled-call loop."""
    from control_api import (
        admin,
        auth,
        calls,
        credits,
        health,
        openapi,
        personas,
        scheduler,
        softphone,
        voice,
    )

    app = web.Application(
        client_max_size=MAX_BODY_BYTES,
        middlewares=[
            cors_middleware(settings.cors_origins),
            metrics_middleware,
            error_middleware,
            ip_rate_limit_middleware,
        ],
    )
    app[SETTINGS] = settings
    app[METRICS] = Metrics()
    app[LIMITS] = limits or Limits()
    app[scheduler.SCHEDULER_INTERVAL] = scheduler_interval
    if twilio is not None:
        app[TWILIO] = twilio
    if pool is not None:
        app[DB] = pool
    else:
        app.cleanup_ctx.append(_pool_ctx(settings))
    app.cleanup_ctx.append(_twilio_ctx)
    app.cleanup_ctx.append(_maintenance_ctx)
    app.cleanup_ctx.append(scheduler.scheduler_ctx)
    app.router.add_routes(health.routes)
    for module in (auth, personas, calls, voice, credits, admin, softphone, openapi):
        module.setup(app)
    return app
