"""The control API and the Twilio stand-in, each on a real loopback port, on a fresh database.

The API's ``PUBLIC_BASE_URL`` is its real address, so the stand-in's signed webhooks reach it
exactly as Twilio's would; the API talks to the stand-in through the official twilio SDK.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
from aiohttp import web
from aiohttp.test_utils import TestServer
from twilio.request_validator import RequestValidator

from control_api.app import create_app
from control_api.state import Limits
from tests.cli_helpers import free_port
from tests.conftest import make_settings
from voice_pipeline.settings import Settings
from voice_pipeline.sim.twilio import TwilioSim

SID = "AC" + "1" * 32
TOKEN = "twilio-test-auth-token"


@dataclass
class Harness:
    settings: Settings
    app: web.Application
    server: TestServer
    sim: TwilioSim
    db: asyncpg.Pool
    http: aiohttp.ClientSession
    base: str
    tokens: dict[str, str] = field(default_factory=dict)

    def url(self, path: str) -> str:
        return self.base + path

    async def request(
        self,
        method: str,
        path: str,
        *,
        token: str | None = None,
        json: Any = None,
        expect: int | None = None,
        **kw: Any,
    ) -> tuple[int, Any, aiohttp.ClientResponse]:
        headers = dict(kw.pop("headers", {}))
        if token:
            headers["Authorization"] = f"Bearer {token}"
        async with self.http.request(method, self.url(path), json=json, headers=headers, **kw) as r:
            text = await r.text()
            try:
                body: Any = await r.json(content_type=None) if text else None
            except ValueError:
                body = text
            if expect is not None:
                assert r.status == expect, (r.status, body)
            return r.status, body, r

    async def register(self, email: str, password: str = "correct horse battery") -> str:
        _, body, _ = await self.request(
            "POST", "/api/auth/register", json={"email": email, "password": password}, expect=201
        )
        self.tokens[email] = body["token"]
        return body["token"]

    async def user_id(self, token: str) -> str:
        _, body, _ = await self.request("GET", "/api/me", token=token, expect=200)
        return body["user"]["id"]

    def sign(self, url: str, params: dict[str, str]) -> str:
        return RequestValidator(TOKEN).compute_signature(url, params)

    async def twilio_post(
        self, path: str, params: dict[str, str], *, signature: str | None = None
    ) -> tuple[int, str]:
        """POST a form the way Twilio does, signed over the public URL unless told otherwise."""
        url = self.settings.public_base_url + path
        sig = self.sign(url, params) if signature is None else signature
        headers = {"X-Twilio-Signature": sig} if sig else {}
        async with self.http.post(self.url(path), data=params, headers=headers) as r:
            return r.status, await r.text()


async def start_harness(
    tmp_path: Path,
    db: asyncpg.Pool,
    db_dsn: str,
    *,
    scheduler_interval: float = 0,
    limits: Limits | None = None,
    twilio_timeout: float = 10.0,
    **env: str,
) -> tuple[Harness, list[Any]]:
    sim = TwilioSim(SID, TOKEN, ring_delay=0.05, callback_backoff=0.05)
    sim_server = TestServer(sim.app, host="127.0.0.1", port=free_port())
    await sim_server.start_server()
    port = free_port()
    settings = make_settings(
        tmp_path,
        db_dsn,
        TWILIO_ACCOUNT_SID=SID,
        TWILIO_AUTH_TOKEN=TOKEN,
        TWILIO_API_BASE=str(sim_server.make_url("")).rstrip("/"),
        PUBLIC_BASE_URL=f"http://127.0.0.1:{port}",
        API_PORT=str(port),
        **env,
    )
    from control_api.twilio_rest import TwilioRest

    app = create_app(
        settings,
        pool=db,
        limits=limits,
        scheduler_interval=scheduler_interval,
        twilio=TwilioRest(settings, timeout=twilio_timeout),
    )
    server = TestServer(app, host="127.0.0.1", port=port)
    await server.start_server()
    http = aiohttp.ClientSession()
    h = Harness(settings, app, server, sim, db, http, f"http://127.0.0.1:{port}")
    return h, [http, server, sim_server]


async def stop_harness(parts: list[Any]) -> None:
    http, server, sim_server = parts
    await http.close()
    await server.close()
    await sim_server.close()


async def harness_fixture(
    tmp_path: Path, db: asyncpg.Pool, db_dsn: str, **kw: Any
) -> AsyncIterator[Harness]:
    h, parts = await start_harness(tmp_path, db, db_dsn, **kw)
    try:
        yield h
    finally:
        await stop_harness(parts)


async def eventually(check: Any, timeout: float = 5.0, interval: float = 0.02) -> Any:
    """Await ``check()`` until it returns a truthy value."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        value = await check()
        if value:
            return value
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"condition not met within {timeout} s (last: {value!r})")
        await asyncio.sleep(interval)
