"""Shared fixtures: one real PostgreSQL per test run, a fresh database per test.

With ``DATABASE_URL`` set, that server is used (databases ``t_*`` are created and dropped on
it); otherwise an embedded server is started in a temporary directory and deleted at the end.
A migrated template database is built once, and each test that wants the schema gets a copy.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest
import pytest_asyncio

from voice_pipeline.db.embedded import start_embedded
from voice_pipeline.db.migrate import migrate
from voice_pipeline.db.pool import connect, create_pool
from voice_pipeline.logs import configure_logging
from voice_pipeline.settings import Settings

# `engines` and `engine_rig` for the engine tests (make test-engines); loading them is cheap.
pytest_plugins = ["tests.engines_harness"]

TEMPLATE_DB = "cmb_template_" + uuid.uuid4().hex[:8]

configure_logging("console", os.environ.get("TEST_LOG_LEVEL", "warning"))
# The stand-ins speak tone-coded speech and scripted replies in `make test`, even where the local
# engines are installed (they are exercised by `make test-engines`); subprocesses inherit this.
os.environ.setdefault("CALLMEBACK_ENGINES", "scripted")


def with_database(dsn: str, name: str) -> str:
    parts = urlsplit(dsn)
    return urlunsplit(parts._replace(path="/" + name))


@pytest.fixture(scope="session")
def pg_server_dsn(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    url = os.environ.get("DATABASE_URL")
    if url:
        yield url
        return
    # Short path: the Unix socket lives in the data directory and paths are limited to ~100 B.
    base = Path(tmp_path_factory.mktemp("pg", numbered=True))
    yield start_embedded(base / "data", delete_on_exit=True)


@pytest_asyncio.fixture(scope="session")
async def template_db(pg_server_dsn: str) -> AsyncIterator[str]:
    admin = await connect(pg_server_dsn)
    try:
        await admin.execute(f'CREATE DATABASE "{TEMPLATE_DB}"')
        conn = await connect(with_database(pg_server_dsn, TEMPLATE_DB))
        try:
            await migrate(conn)
        finally:
            await conn.close()
        yield TEMPLATE_DB
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{TEMPLATE_DB}" WITH (FORCE)')
        await admin.close()


async def _new_database(server_dsn: str, template: str | None) -> tuple[str, str]:
    name = "t_" + uuid.uuid4().hex[:12]
    admin = await connect(server_dsn)
    try:
        clause = f' TEMPLATE "{template}"' if template else ""
        await admin.execute(f'CREATE DATABASE "{name}"{clause}')
    finally:
        await admin.close()
    return name, with_database(server_dsn, name)


async def _drop_database(server_dsn: str, name: str) -> None:
    admin = await connect(server_dsn)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


@pytest_asyncio.fixture
async def empty_db(pg_server_dsn: str) -> AsyncIterator[str]:
    """DSN of a brand-new, unmigrated database."""
    name, dsn = await _new_database(pg_server_dsn, None)
    try:
        yield dsn
    finally:
        await _drop_database(pg_server_dsn, name)


@pytest_asyncio.fixture
async def db_dsn(pg_server_dsn: str, template_db: str) -> AsyncIterator[str]:
    """DSN of a fresh database with every migration applied."""
    name, dsn = await _new_database(pg_server_dsn, template_db)
    try:
        yield dsn
    finally:
        await _drop_database(pg_server_dsn, name)


@pytest_asyncio.fixture
async def db(db_dsn: str) -> AsyncIterator[asyncpg.Pool]:
    pool = await create_pool(db_dsn, min_size=1, max_size=10)
    try:
        yield pool
    finally:
        await pool.close()


def make_settings(tmp_path: Path, dsn: str | None = None, **env: str) -> Settings:
    base = {
        "APP_ENV": "test",
        "CALLMEBACK_DATA_DIR": str(tmp_path),
        "JWT_SECRET": "test-jwt-secret-" + "x" * 32,
        "ADMIN_TOKEN": "test-admin-token-0123456789",
        "LOG_FORMAT": "console",
    }
    if dsn:
        base["DATABASE_URL"] = dsn
    base.update(env)
    return Settings.from_env(base)


@pytest.fixture
def settings(tmp_path: Path, db_dsn: str) -> Settings:
    return make_settings(tmp_path, db_dsn)


@pytest_asyncio.fixture
async def api(tmp_path: Path, db: asyncpg.Pool, db_dsn: str) -> AsyncIterator[Any]:
    """The control API + Twilio stand-in on real ports (see tests/api_harness.py)."""
    from tests.api_harness import harness_fixture

    async for h in harness_fixture(tmp_path, db, db_dsn):
        yield h


@pytest_asyncio.fixture
async def rig(tmp_path: Path, db: asyncpg.Pool, db_dsn: str) -> AsyncIterator[Any]:
    """Control API + voice server + stand-ins (see tests/voice_harness.py)."""
    from tests.voice_harness import voice_rig
    from voice_pipeline.server import VoiceConfig

    async for r in voice_rig(tmp_path, db, db_dsn, config=VoiceConfig(idle_timeout_s=30)):
        yield r
