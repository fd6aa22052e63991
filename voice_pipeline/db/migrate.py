"""The migration runner.

``migrations/NNN_name.sql`` files are applied in version order, each in its own transaction,
and recorded in ``schema_migrations`` (version, name, checksum, applied_at). The runner

- holds a session advisory lock, so two processes starting at once apply each file once;
- refuses to run when an applied file's checksum changed or an applied file disappeared;
- refuses files that manage their own transaction (``BEGIN``/``COMMIT``): it wraps each one;
- on an SQL error rolls the file back whole and names the file and line.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

import asyncpg

from voice_pipeline.db.errors import MigrationError
from voice_pipeline.settings import REPO_ROOT

MIGRATIONS_DIR = REPO_ROOT / "migrations"

# Arbitrary but fixed: the advisory lock key every callmeback process agrees on.
ADVISORY_LOCK_KEY = 0x63616C6C6D65  # "callme"

_FILE_RE = re.compile(r"^(\d{3,})_([a-z0-9_]+)\.sql$")
_TXN_RE = re.compile(r"^\s*(BEGIN|COMMIT|ROLLBACK|START\s+TRANSACTION)\b", re.I | re.M)


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    path: Path
    sql: str
    checksum: str


def discover(directory: Path = MIGRATIONS_DIR) -> list[Migration]:
    if not directory.is_dir():
        raise MigrationError(f"migrations directory {directory} does not exist")
    found: dict[int, Migration] = {}
    for path in sorted(directory.iterdir()):
        if path.suffix != ".sql":
            continue
        m = _FILE_RE.match(path.name)
        if not m:
            raise MigrationError(f"{path.name}: migration files are named NNN_lower_snake.sql")
        version = int(m.group(1))
        if version in found:
            raise MigrationError(
                f"{path.name}: version {version} also used by {found[version].path.name}"
            )
        sql = path.read_text(encoding="utf-8")
        if _TXN_RE.search(_strip_comments(sql)):
            raise MigrationError(
                f"{path.name}: remove BEGIN/COMMIT; the runner wraps each file in a transaction"
            )
        checksum = hashlib.sha256(sql.encode()).hexdigest()
        found[version] = Migration(version, m.group(2), path, sql, checksum)
    return [found[v] for v in sorted(found)]


def _strip_comments(sql: str) -> str:
    sql = re.sub(r"/\*.*?\*/", "", sql, flags=re.S)
    sql = re.sub(r"--[^\n]*", "", sql)
    # Function bodies ($$ ... $$) may legitimately contain BEGIN (plpgsql blocks).
    return re.sub(r"\$([a-z_]*)\$.*?\$\1\$", "", sql, flags=re.S | re.I)


_CREATE_TABLE = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version     INTEGER PRIMARY KEY,
    name        TEXT NOT NULL,
    checksum    TEXT NOT NULL,
    applied_at  TIMESTAMPTZ NOT NULL DEFAULT now()
)
"""


async def migrate(conn: asyncpg.Connection, directory: Path = MIGRATIONS_DIR) -> list[Migration]:
    """Apply pending migrations; return those applied now (empty on a second run)."""
    migrations = discover(directory)
    await conn.execute("SELECT pg_advisory_lock($1)", ADVISORY_LOCK_KEY)
    try:
        await conn.execute(_CREATE_TABLE)
        rows = await conn.fetch("SELECT version, name, checksum FROM schema_migrations")
        applied = {r["version"]: r for r in rows}
        on_disk = {m.version: m for m in migrations}
        for version, row in sorted(applied.items()):
            m = on_disk.get(version)
            if m is None:
                raise MigrationError(
                    f"migration {version:03d}_{row['name']}.sql was applied but is missing from "
                    f"{directory}"
                )
            if m.checksum != row["checksum"]:
                raise MigrationError(
                    f"{m.path.name}: changed after it was applied (checksum {row['checksum'][:12]}"
                    f" recorded, {m.checksum[:12]} on disk); add a new migration instead"
                )
        done: list[Migration] = []
        for m in migrations:
            if m.version in applied:
                continue
            try:
                async with conn.transaction():
                    await conn.execute(m.sql)
                    await conn.execute(
                        "INSERT INTO schema_migrations (version, name, checksum) "
                        "VALUES ($1, $2, $3)",
                        m.version,
                        m.name,
                        m.checksum,
                    )
            except asyncpg.PostgresError as err:
                raise MigrationError(_describe(m, err)) from err
            done.append(m)
        return done
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", ADVISORY_LOCK_KEY)


def _describe(m: Migration, err: asyncpg.PostgresError) -> str:
    where = m.path.name
    position = getattr(err, "position", None)
    if position:
        try:
            offset = int(position) - 1
            where += f" line {m.sql.count(chr(10), 0, offset) + 1}"
        except ValueError:
            pass
    msg = getattr(err, "message", None) or str(err)
    return f"{where}: {msg} (rolled back; nothing of this file was applied)"
