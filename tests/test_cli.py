"""Guards the console script's contract: clear one-line failures, migrate, and serve-api
serving /health and /ready on a real database with a clean shutdown on SIGTERM."""

from __future__ import annotations

import asyncio
import signal
import socket
import subprocess
from pathlib import Path

import aiohttp

from tests.cli_helpers import CLI, cli_env, free_port, run_cli


async def test_malformed_setting_is_one_line_naming_it(tmp_path: Path) -> None:
    code, _, err = await run_cli("migrate", env=cli_env(tmp_path, API_PORT="eighty"))
    assert code == 2
    assert err.strip().splitlines() == [
        "callmeback: configuration error: API_PORT: must be a whole number, not 'eighty'"
    ]


async def test_unreachable_database_url_is_one_line_without_the_password(tmp_path: Path) -> None:
    env = cli_env(
        tmp_path,
        DATABASE_URL="postgresql://bob:hunter2secret@127.0.0.1:1/nope",
        DB_CONNECT_TIMEOUT="3",
    )
    code, _, err = await run_cli("migrate", env=env)
    assert code == 1
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "cannot connect" in lines[0] and "127.0.0.1:1" in lines[0]
    assert "hunter2secret" not in err


async def test_wrong_database_name_is_named(tmp_path: Path, pg_server_dsn: str) -> None:
    from tests.conftest import with_database

    env = cli_env(tmp_path, DATABASE_URL=with_database(pg_server_dsn, "does_not_exist"))
    code, _, err = await run_cli("migrate", env=env)
    assert code == 1 and "database does not exist" in err


async def test_migrate_then_serve_api_answers_health_and_ready(
    tmp_path: Path, empty_db: str
) -> None:
    port = free_port()
    env = cli_env(tmp_path, DATABASE_URL=empty_db, API_PORT=str(port))
    code, _, err = await run_cli("serve-api", env=env)
    assert code == 1 and "pending" in err and "callmeback migrate" in err

    code, _, err = await run_cli("migrate", env=env)
    assert code == 0, err
    proc = await asyncio.create_subprocess_exec(
        *CLI, "serve-api", env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        async with aiohttp.ClientSession() as http:
            for _ in range(100):
                try:
                    async with http.get(f"http://127.0.0.1:{port}/health") as r:
                        assert r.status == 200 and (await r.json()) == {"status": "ok"}
                        break
                except aiohttp.ClientConnectionError:
                    await asyncio.sleep(0.1)
            else:
                raise AssertionError("serve-api did not start")
            async with http.get(f"http://127.0.0.1:{port}/ready") as r:
                assert r.status == 200 and (await r.json())["database"] == "ok"
            async with http.get(f"http://127.0.0.1:{port}/nope") as r:
                assert r.status == 404
                assert (await r.json())["error"]["code"] == "not_found"
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err_bytes = await asyncio.wait_for(proc.communicate(), 20)
    assert proc.returncode == 0, err_bytes.decode()
    assert "shutting_down" in err_bytes.decode()


async def test_port_already_taken_is_named(tmp_path: Path, db_dsn: str) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        env = cli_env(tmp_path, DATABASE_URL=db_dsn, API_PORT=str(port))
        code, _, err = await run_cli("serve-api", env=env)
    assert code == 1
    assert f"API_PORT {port} on 127.0.0.1 is already in use" in err


async def test_sim_serves_every_stand_in_until_sigterm(tmp_path: Path) -> None:
    import random

    base = random.randrange(20000, 60000, 4)
    env = cli_env(
        tmp_path,
        SIM_BASE_PORT=str(base),
        LLM_API_KEY="k",
        LLM_BASE_URL=f"http://127.0.0.1:{base + 3}/v1",
    )
    proc = await asyncio.create_subprocess_exec(
        *CLI, "sim", env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        async with aiohttp.ClientSession() as http:
            for _ in range(100):
                try:
                    async with http.get(
                        f"http://127.0.0.1:{base + 3}/v1/models",
                        headers={"Authorization": "Bearer k"},
                    ) as r:
                        assert r.status == 200
                        break
                except aiohttp.ClientConnectionError:
                    await asyncio.sleep(0.1)
            else:
                raise AssertionError("sim did not start")
            url = f"http://127.0.0.1:{base}/2010-04-01/Accounts/AC{'0' * 32}/Calls.json"
            async with http.post(url, data={"To": "+15551234567"}) as r:
                assert r.status == 401 and (await r.json())["code"] == 20003
            async with http.get(f"http://127.0.0.1:{base + 1}/v1/listen") as r:
                assert r.status == 401 and r.headers["dg-error"]
            async with http.post(
                f"http://127.0.0.1:{base + 2}/v1/text-to-speech/v/stream", json={"text": "hi"}
            ) as r:
                assert r.status == 401
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = await asyncio.wait_for(proc.communicate(), 20)
    assert proc.returncode == 0, err.decode()
    assert "stand_ins_listening" in err.decode()
