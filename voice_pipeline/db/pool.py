"""The asyncpg pool: DSN resolution, timeouts, JSON codecs and the health check."""

from __future__ import annotations

import asyncio
import json
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from voice_pipeline.db.embedded import start_embedded
from voice_pipeline.db.errors import DatabaseUnavailable
from voice_pipeline.settings import Settings


def redact_dsn(dsn: str) -> str:
    """The DSN with any password replaced, for messages and logs."""
    parts = urlsplit(dsn)
    if parts.password:
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
        return urlunsplit(parts._replace(netloc=netloc))
    return dsn


async def resolve_dsn(settings: Settings) -> str:
    """``DATABASE_URL`` if set, else the embedded server under ``<data_dir>/pg`` (started)."""
    if settings.database_url:
        return settings.database_url
    return await asyncio.to_thread(start_embedded, settings.data_dir / "pg")


async def _init_connection(conn: asyncpg.Connection) -> None:
    for typ in ("json", "jsonb"):
        await conn.set_type_codec(typ, encoder=json.dumps, decoder=json.loads, schema="pg_catalog")


async def connect(dsn: str, *, timeout: float = 10.0) -> asyncpg.Connection:
    """One connection (migrations, tools), with the same error mapping as the pool."""
    try:
        conn = await asyncpg.connect(dsn, timeout=timeout)
    except Exception as err:
        raise _unavailable(dsn, err) from err
    await _init_connection(conn)
    return conn


async def create_pool(dsn: str, settings: Settings | None = None, **overrides: Any) -> asyncpg.Pool:
    opts: dict[str, Any] = {
        "min_size": settings.db_pool_min if settings else 1,
        "max_size": settings.db_pool_max if settings else 10,
        "timeout": settings.db_connect_timeout if settings else 10.0,
        "command_timeout": settings.db_command_timeout if settings else 30.0,
        "max_inactive_connection_lifetime": 300.0,
        "init": _init_connection,
    }
    opts.update(overrides)
    try:
        return await asyncpg.create_pool(dsn, **opts)
    except Exception as err:
        raise _unavailable(dsn, err) from err


async def healthcheck(pool: asyncpg.Pool, timeout: float = 2.0) -> bool:
    try:
        async with asyncio.timeout(timeout):
            return await pool.fetchval("SELECT 1") == 1
    except (OSError, asyncpg.PostgresError, TimeoutError, asyncpg.InterfaceError):
        return False


def _unavailable(dsn: str, err: BaseException) -> DatabaseUnavailable:
    where = redact_dsn(dsn)
    if isinstance(
        err, asyncpg.InvalidPasswordError | asyncpg.InvalidAuthorizationSpecificationError
    ):
        why = "authentication failed"
    elif isinstance(err, asyncpg.InvalidCatalogNameError):
        why = "database does not exist"
    elif isinstance(err, TimeoutError):
        why = "connection timed out"
    elif isinstance(err, OSError):
        why = f"cannot connect ({err.strerror or err})"
    elif isinstance(err, ValueError | asyncpg.ClientConfigurationError):
        why = f"malformed DATABASE_URL ({err})"
    else:
        why = f"{type(err).__name__}: {err}"
    return DatabaseUnavailable(f"PostgreSQL at {where}: {why}")
