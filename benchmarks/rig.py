"""The system under test in its own process, the stand-ins in this one.

The driver starts an embedded PostgreSQL (its own throw-away data directory), migrates a fresh
database, starts the four stand-ins here with the configured delays, and launches
``callmeback up`` in a subprocess pointed at them (every provider "real" from its point of view:
keys set, URLs explicit). Calls are placed through the control API like a user would.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg

from voice_pipeline.db.embedded import start_embedded
from voice_pipeline.db.migrate import migrate
from voice_pipeline.db.pool import connect, create_pool
from voice_pipeline.settings import Settings
from voice_pipeline.sim.latency import Latency
from voice_pipeline.sim.local import LocalEngines
from voice_pipeline.sim.stack import Latencies, SimStack
from voice_pipeline.sim.twilio_media import CallerScript, StreamLog

SID, TOKEN = "AC" + "b" * 32, "bench-token"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Delays:
    endpointing_ms: int = 300
    llm_first_ms: float = 150
    llm_tokens_per_s: float = 60
    tts_first_ms: float = 120

    def latencies(self) -> Latencies:
        return Latencies(
            deepgram=Latency(),
            llm=Latency(first_ms=self.llm_first_ms, per_token_ms=1000 / self.llm_tokens_per_s),
            elevenlabs=Latency(first_ms=self.tts_first_ms),
        )


class BenchRig:
    def __init__(self, delays: Delays, engines: LocalEngines | None = None) -> None:
        self.delays = delays
        self.engines = engines  # local engines behind the stand-ins: their latency is real
        self.tmp = Path(tempfile.mkdtemp(prefix="cmb-bench-"))
        self.proc: asyncio.subprocess.Process | None = None
        self.http: aiohttp.ClientSession | None = None
        self.pool: asyncpg.Pool | None = None
        self.token = ""

    async def start(self) -> None:
        dsn = await asyncio.to_thread(start_embedded, self.tmp / "pg", delete_on_exit=True)
        conn = await connect(dsn)
        await conn.execute("CREATE DATABASE bench")
        await conn.close()
        dsn = dsn.replace("/postgres?", "/bench?")
        conn = await connect(dsn)
        await migrate(conn)
        await conn.execute("UPDATE personas SET endpointing_ms = $1", self.delays.endpointing_ms)
        await conn.close()
        self.pool = await create_pool(dsn, min_size=1, max_size=4)
        env_base = {
            "CALLMEBACK_DATA_DIR": str(self.tmp),
            "JWT_SECRET": "b" * 40,
            "ADMIN_TOKEN": "bench-admin-token",
            "TWILIO_ACCOUNT_SID": SID,
            "TWILIO_AUTH_TOKEN": TOKEN,
        }
        self.stack = SimStack(
            Settings.from_env(env_base),
            latencies=self.delays.latencies() if self.engines is None else None,
            ring_delay=0.05,
            engines=self.engines,
        )
        urls = await self.stack.start(ports={"twilio": 0, "deepgram": 0, "elevenlabs": 0, "llm": 0})
        api, voice = free_port(), free_port()
        self.api = f"http://127.0.0.1:{api}"
        self.voice_http = f"http://127.0.0.1:{voice}"
        env = {
            **os.environ,
            **env_base,
            "APP_ENV": "test",
            "DATABASE_URL": dsn,
            "API_PORT": str(api),
            "VOICE_PORT": str(voice),
            "PUBLIC_BASE_URL": self.api,
            "VOICE_WS_URL": f"ws://127.0.0.1:{voice}/stream",
            "TWILIO_API_BASE": urls["twilio"],
            "DEEPGRAM_API_KEY": "bench",
            "DEEPGRAM_URL": urls["deepgram"],
            "LLM_API_KEY": "bench",
            "LLM_BASE_URL": urls["llm"],
            "ELEVENLABS_API_KEY": "bench",
            "ELEVENLABS_URL": urls["elevenlabs"],
            "LOG_LEVEL": "warning",
            "LOG_FORMAT": "json",
            "DB_POOL_MAX": "20",
        }
        self._log = (self.tmp / "server.log").open("wb")
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "control_api.cli",
            "up",
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=self._log,
        )
        self.http = aiohttp.ClientSession()
        for _ in range(200):
            try:
                async with self.http.get(self.api + "/ready") as r:
                    if r.status == 200:
                        break
            except aiohttp.ClientConnectionError:
                pass
            await asyncio.sleep(0.1)
        else:
            raise RuntimeError(f"server under test did not start; see {self.tmp / 'server.log'}")
        async with self.http.post(
            self.api + "/api/auth/register",
            json={"email": "bench@example.com", "password": "bench-password"},
        ) as r:
            self.token = (await r.json())["token"]
        await self.pool.execute(
            "UPDATE user_credits SET available_credits = 1000000, "
            "max_calls_per_day = NULL, max_call_duration_seconds = 600"
        )
        await self.pool.execute(
            "UPDATE user_budget_settings SET max_monthly_spend_cents = 100000000,"
            " max_cost_per_call_cents = 1000000"
        )
        await asyncio.sleep(1.0)  # greetings warm up in the server

    async def call(self, script: CallerScript, number: str) -> StreamLog:
        assert self.http is not None
        self.stack.caller.scripts[number] = script
        async with self.http.post(
            self.api + "/api/calls/trigger",
            json={"persona_id": "brad", "phone_number": number},
            headers={"Authorization": f"Bearer {self.token}"},
        ) as r:
            body: dict[str, Any] = await r.json()
            if r.status != 201:
                raise RuntimeError(f"trigger failed: {body}")
        sid = body["call"]["twilio_call_sid"]
        sim_call = await self.stack.twilio.wait_ended(sid, timeout=script.max_seconds + 60)
        if sim_call.stream_task is not None:
            await sim_call.stream_task
        return self.stack.caller.logs[sid]

    def server_pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    async def stop(self) -> None:
        if self.http:
            await self.http.close()
        if self.proc and self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.proc.wait(), 30)
            except TimeoutError:
                self.proc.kill()
        self._log.close()
        await self.stack.stop()
        if self.pool:
            await self.pool.close()

    # ------------------------------------------------------------------ server statistics
    def cpu_seconds(self) -> float:
        fields = Path(f"/proc/{self.server_pid()}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def rss_mb(self) -> float:
        for line in Path(f"/proc/{self.server_pid()}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return float("nan")

    def open_fds(self) -> int:
        return len(os.listdir(f"/proc/{self.server_pid()}/fd"))

    async def loop_lag_buckets(self) -> dict[float, float]:
        """Cumulative bucket counts of the voice server's event-loop lag histogram."""
        assert self.http is not None
        async with self.http.get(self.voice_http + "/metrics") as r:
            text = await r.text()
        out: dict[float, float] = {}
        for line in text.splitlines():
            if line.startswith("callmeback_voice_loop_lag_ms_bucket"):
                le = line.split('le="', 1)[1].split('"', 1)[0]
                out[float("inf") if le == "+Inf" else float(le)] = float(line.rsplit(" ", 1)[1])
        return out


def lag_quantile(before: dict[float, float], after: dict[float, float], q: float) -> float:
    """Upper bucket bound holding the q-quantile of the lag observed between two scrapes."""
    delta = {le: after.get(le, 0) - before.get(le, 0) for le in after}
    total = delta.get(float("inf"), 0)
    if not total:
        return float("nan")
    for le in sorted(delta):
        if delta[le] >= q * total:
            return le
    return float("inf")
