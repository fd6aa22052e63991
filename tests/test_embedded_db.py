"""Guards the embedded PostgreSQL: it keeps data across restarts and refuses a data directory
that belongs to someone else with a clear message."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from voice_pipeline.db import DatabaseUnavailable
from voice_pipeline.db.embedded import start_embedded

SCRIPT = """
import asyncio, sys
from pathlib import Path
from voice_pipeline.db.embedded import start_embedded
from voice_pipeline.db.pool import connect

async def main(step):
    conn = await connect(start_embedded(Path(sys.argv[1])))
    if step == "write":
        await conn.execute("CREATE TABLE kept (v text)")
        await conn.execute("INSERT INTO kept VALUES ('survives restarts')")
    else:
        print(await conn.fetchval("SELECT v FROM kept"))
    await conn.close()

asyncio.run(main(sys.argv[2]))
"""


def _run(pgdata: Path, step: str) -> str:
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(pgdata), step],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def test_data_survives_a_stop_and_start(tmp_path: Path) -> None:
    pgdata = tmp_path / "pg"
    _run(pgdata, "write")  # the process exits: the server is stopped with it
    assert not (pgdata / "postmaster.pid").exists()
    assert _run(pgdata, "read") == "survives restarts"


def test_data_directory_owned_by_someone_else_is_refused(tmp_path: Path) -> None:
    if os.geteuid() == 0:
        pgdata = tmp_path / "theirs"
        pgdata.mkdir()
        os.chown(pgdata, 65534, 65534)  # nobody
    else:
        pgdata = Path("/")  # exists and belongs to root, not to us
    with pytest.raises(DatabaseUnavailable, match="is owned by"):
        start_embedded(pgdata)
