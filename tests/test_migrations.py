"""Guards the migration runner: ordered, transactional, recorded, locked, checksum-verified."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from voice_pipeline.db import MigrationError
from voice_pipeline.db.migrate import MIGRATIONS_DIR, discover, migrate
from voice_pipeline.db.pool import connect


@pytest.fixture
def migrations_copy(tmp_path: Path) -> Path:
    target = tmp_path / "migrations"
    shutil.copytree(MIGRATIONS_DIR, target)
    return target


async def test_fresh_migrate_applies_all_then_second_run_is_noop(empty_db: str) -> None:
    conn = await connect(empty_db)
    try:
        applied = await migrate(conn)
        assert [m.version for m in applied] == [m.version for m in discover()]
        rows = await conn.fetch(
            "SELECT version, name, checksum, applied_at FROM schema_migrations ORDER BY version"
        )
        assert [(r["version"], r["name"], r["checksum"]) for r in rows] == [
            (m.version, m.name, m.checksum) for m in discover()
        ]
        assert all(r["applied_at"] is not None for r in rows)
        assert await migrate(conn) == []
        assert await conn.fetchval("SELECT count(*) FROM schema_migrations") == len(rows)
    finally:
        await conn.close()


async def test_changed_checksum_is_refused(empty_db: str, migrations_copy: Path) -> None:
    conn = await connect(empty_db)
    try:
        await migrate(conn, migrations_copy)
        first = sorted(migrations_copy.glob("001_*.sql"))[0]
        first.write_text(first.read_text() + "\n-- edited after the fact\n")
        with pytest.raises(
            MigrationError, match=r"001_core_schema\.sql: changed after it was applied"
        ):
            await migrate(conn, migrations_copy)
    finally:
        await conn.close()


async def test_missing_applied_file_is_refused(empty_db: str, migrations_copy: Path) -> None:
    conn = await connect(empty_db)
    try:
        await migrate(conn, migrations_copy)
        sorted(migrations_copy.glob("002_*.sql"))[0].unlink()
        with pytest.raises(
            MigrationError, match="002_seed_personas.sql was applied but is missing"
        ):
            await migrate(conn, migrations_copy)
    finally:
        await conn.close()


async def test_sql_error_rolls_back_whole_file_and_names_file_and_line(
    empty_db: str, migrations_copy: Path
) -> None:
    bad = migrations_copy / "900_broken.sql"
    bad.write_text(
        "CREATE TABLE half_applied (id int);\n"
        "-- a comment\n"
        "INSERT INTO half_applied VALUES (1);\n"
        "SELECT * FROM no_such_table;\n"
    )
    conn = await connect(empty_db)
    try:
        with pytest.raises(MigrationError) as info:
            await migrate(conn, migrations_copy)
        msg = str(info.value)
        assert "900_broken.sql line 4" in msg and "no_such_table" in msg and "rolled back" in msg
        # Earlier files stay applied; nothing of the broken one exists.
        last_real = max(m.version for m in discover())
        assert await conn.fetchval("SELECT max(version) FROM schema_migrations") == last_real
        assert await conn.fetchval("SELECT to_regclass('half_applied')") is None
        # Fixing the file lets the next run apply it.
        bad.write_text("CREATE TABLE half_applied (id int);\n")
        assert [m.version for m in await migrate(conn, migrations_copy)] == [900]
    finally:
        await conn.close()


def test_files_that_manage_their_own_transaction_are_refused(migrations_copy: Path) -> None:
    (migrations_copy / "900_txn.sql").write_text("BEGIN;\nCREATE TABLE x (id int);\nCOMMIT;\n")
    with pytest.raises(MigrationError, match="900_txn.sql: remove BEGIN/COMMIT"):
        discover(migrations_copy)


def test_bad_names_and_duplicate_versions_are_refused(migrations_copy: Path) -> None:
    (migrations_copy / "3-oops.sql").write_text("SELECT 1;")
    with pytest.raises(MigrationError, match="3-oops.sql: migration files are named"):
        discover(migrations_copy)
    (migrations_copy / "3-oops.sql").unlink()
    (migrations_copy / "002_again.sql").write_text("SELECT 1;")
    with pytest.raises(MigrationError, match="version 2 also used"):
        discover(migrations_copy)


async def test_two_processes_migrating_at_once_apply_each_file_once(empty_db: str) -> None:
    env = {
        **os.environ,
        "DATABASE_URL": empty_db,
        "APP_ENV": "test",
        "LOG_FORMAT": "json",
        "JWT_SECRET": "j" * 40,
        "ADMIN_TOKEN": "a" * 20,
    }
    cmd = [sys.executable, "-m", "control_api.cli", "migrate"]
    procs = [
        await asyncio.create_subprocess_exec(
            *cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        for _ in range(2)
    ]
    results = await asyncio.gather(*(p.communicate() for p in procs))
    assert [p.returncode for p in procs] == [0, 0], results
    outputs = [err.decode() for _, err in results]
    # Exactly one of them applied the files; the other found nothing to do.
    assert sum("migrations_applied" in o for o in outputs) == 1, outputs
    assert sum("migrations_up_to_date" in o for o in outputs) == 1, outputs
    conn = await connect(empty_db)
    try:
        assert await conn.fetchval("SELECT count(*) FROM schema_migrations") == len(discover())
    finally:
        await conn.close()
