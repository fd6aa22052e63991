"""Run the ``callmeback`` console script in a subprocess, as a user would."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
from pathlib import Path

CLI = [sys.executable, "-m", "control_api.cli"]


def cli_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TWILIO_", "DATABASE_URL"))}
    env.update(
        APP_ENV="test",
        CALLMEBACK_DATA_DIR=str(tmp_path),
        JWT_SECRET="j" * 40,
        ADMIN_TOKEN="a" * 20,
        LOG_FORMAT="json",
    )
    env.update(extra)
    return env


async def run_cli(*args: str, env: dict[str, str], timeout: float = 60) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        *CLI, *args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
