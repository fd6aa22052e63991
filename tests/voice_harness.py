"""The whole product on loopback: control API, voice server, and the four stand-ins, on a
fresh database. A test triggers a call through the API exactly as the frontend would; the
Twilio stand-in dials, fetches the TwiML, opens the media stream to the voice server, and its
scripted caller talks."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
from aiohttp.test_utils import TestServer

from control_api.app import create_app
from control_api.twilio_rest import TwilioRest
from tests.cli_helpers import free_port
from tests.conftest import make_settings
from voice_pipeline.server import VoiceConfig, VoiceServer
from voice_pipeline.settings import Settings
from voice_pipeline.sim.local import LocalEngines
from voice_pipeline.sim.stack import Latencies, SimStack
from voice_pipeline.sim.twilio_media import CallerScript, StreamLog

SID, TOKEN = "AC" + "3" * 32, "voice-test-token"

CALL_TASK_NAMES = {"twilio-reader", "main", "pacer", "ticker", "db-writer", "stt", "tts-reader"}


def call_tasks() -> list[str]:
    """Names of live tasks that belong to a call session (none may outlive its call)."""
    return sorted(
        t.get_name()
        for t in asyncio.all_tasks()
        if (t.get_name() in CALL_TASK_NAMES or t.get_name().startswith("llm-")) and not t.done()
    )


@dataclass
class VoiceRig:
    settings: Settings
    stack: SimStack
    voice: VoiceServer
    api: TestServer
    http: aiohttp.ClientSession
    db: asyncpg.Pool
    token: str = ""

    async def call(
        self, script: CallerScript, number: str = "+15557770001", persona: str = "brad"
    ) -> dict[str, Any]:
        self.stack.caller.scripts[number] = script
        async with self.http.post(
            f"{self.settings.public_base_url}/api/calls/trigger",
            json={"persona_id": persona, "phone_number": number},
            headers={"Authorization": f"Bearer {self.token}"},
        ) as r:
            body = await r.json()
            assert r.status == 201, body
        return body["call"]

    async def finish(self, call: dict[str, Any], timeout: float = 30) -> StreamLog:
        sim_call = await self.stack.twilio.wait_ended(call["twilio_call_sid"], timeout)
        if sim_call.stream_task is not None:
            await sim_call.stream_task
        return self.stack.caller.logs[sim_call.sid]


async def voice_rig(
    tmp_path: Path,
    db: asyncpg.Pool,
    db_dsn: str,
    *,
    config: VoiceConfig | None = None,
    latencies: Latencies | None = None,
    engines: LocalEngines | None = None,
    **env: str,
) -> AsyncIterator[VoiceRig]:
    base = make_settings(tmp_path, db_dsn, TWILIO_ACCOUNT_SID=SID, TWILIO_AUTH_TOKEN=TOKEN)
    stack = SimStack(base, latencies=latencies, ring_delay=0.05, engines=engines)
    urls = await stack.start(ports={"twilio": 0, "deepgram": 0, "elevenlabs": 0, "llm": 0})
    api_port, voice_port = free_port(), free_port()
    settings = make_settings(
        tmp_path,
        db_dsn,
        TWILIO_ACCOUNT_SID=SID,
        TWILIO_AUTH_TOKEN=TOKEN,
        TWILIO_API_BASE=urls["twilio"],
        DEEPGRAM_URL=urls["deepgram"],
        LLM_BASE_URL=urls["llm"],
        ELEVENLABS_URL=urls["elevenlabs"],
        PUBLIC_BASE_URL=f"http://127.0.0.1:{api_port}",
        VOICE_WS_URL=f"ws://127.0.0.1:{voice_port}/stream",
        **env,
    )
    voice = VoiceServer(settings, db, config or VoiceConfig())
    await voice.start("127.0.0.1", voice_port)
    app = create_app(settings, pool=db, scheduler_interval=0, twilio=TwilioRest(settings))
    api = TestServer(app, host="127.0.0.1", port=api_port)
    await api.start_server()
    http = aiohttp.ClientSession()
    rig = VoiceRig(settings, stack, voice, api, http, db)
    async with http.post(
        f"http://127.0.0.1:{api_port}/api/auth/register",
        json={"email": "voice@example.com", "password": "voice-password"},
    ) as r:
        rig.token = (await r.json())["token"]
    await db.execute("UPDATE user_credits SET available_credits = 100, max_calls_per_day = NULL")
    # Live calls reserve their per-call budget against the month (see bind_call): give the test
    # user room for many concurrent calls.
    await db.execute("UPDATE user_budget_settings SET max_monthly_spend_cents = 10000000")
    try:
        yield rig
    finally:
        await http.close()
        await voice.stop()
        await api.close()
        stack.engines = LocalEngines()  # shared engines outlive the rig (module fixture)
        await stack.stop()
