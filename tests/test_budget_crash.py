"""Guards the books when the voice process dies mid-call: transcript rows and cost events
written before the crash survive, Twilio's final status callback closes the call from them
(missing telephony minutes added at the call's own rates), the breakdown equals the sum of
events, and credits are deducted exactly once."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from decimal import Decimal
from pathlib import Path

import aiohttp
import asyncpg
from aiohttp.test_utils import TestServer

from control_api.app import create_app
from control_api.twilio_rest import TwilioRest
from tests.cli_helpers import free_port
from tests.conftest import make_settings
from voice_pipeline.sim.stack import SimStack
from voice_pipeline.sim.twilio_media import CallerScript, Utterance

SID, TOKEN = "AC" + "4" * 32, "crash-token"


async def test_killed_voice_process_leaves_books_the_callback_completes(
    tmp_path: Path, db: asyncpg.Pool, db_dsn: str
) -> None:
    base = make_settings(tmp_path, db_dsn, TWILIO_ACCOUNT_SID=SID, TWILIO_AUTH_TOKEN=TOKEN)
    stack = SimStack(base, ring_delay=0.05)
    urls = await stack.start(ports={"twilio": 0, "deepgram": 0, "elevenlabs": 0, "llm": 0})
    api_port, voice_port = free_port(), free_port()
    env = {
        "TWILIO_ACCOUNT_SID": SID,
        "TWILIO_AUTH_TOKEN": TOKEN,
        "TWILIO_API_BASE": urls["twilio"],
        "DEEPGRAM_URL": urls["deepgram"],
        "LLM_BASE_URL": urls["llm"],
        "ELEVENLABS_URL": urls["elevenlabs"],
        "PUBLIC_BASE_URL": f"http://127.0.0.1:{api_port}",
        "VOICE_WS_URL": f"ws://127.0.0.1:{voice_port}/stream",
        "VOICE_PORT": str(voice_port),
    }
    settings = make_settings(tmp_path, db_dsn, **env)
    app = create_app(settings, pool=db, scheduler_interval=0, twilio=TwilioRest(settings))
    api = TestServer(app, host="127.0.0.1", port=api_port)
    await api.start_server()
    proc_env = {
        **os.environ,
        "APP_ENV": "test",
        "CALLMEBACK_DATA_DIR": str(tmp_path),
        "JWT_SECRET": settings.jwt_secret,
        "ADMIN_TOKEN": settings.admin_token,
        "DATABASE_URL": db_dsn,
        "LOG_FORMAT": "json",
        **env,
    }
    voice = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "control_api.cli",
        "serve-voice",
        env=proc_env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    http = aiohttp.ClientSession()
    try:
        for _ in range(200):
            try:
                async with http.get(f"http://127.0.0.1:{voice_port}/health") as r:
                    if r.status == 200:
                        break
            except aiohttp.ClientConnectionError:
                await asyncio.sleep(0.05)
        async with http.post(
            f"http://127.0.0.1:{api_port}/api/auth/register",
            json={"email": "crash@example.com", "password": "crash-password"},
        ) as r:
            token = (await r.json())["token"]
        stack.caller.scripts["+15557770801"] = CallerScript(
            utterances=[Utterance("Tell me about deadlifts")], hang_up_after=None, max_seconds=60
        )
        async with http.post(
            f"http://127.0.0.1:{api_port}/api/calls/trigger",
            json={"persona_id": "brad", "phone_number": "+15557770801"},
            headers={"Authorization": f"Bearer {token}"},
        ) as r:
            call = (await r.json())["call"]
        for _ in range(400):  # until the reply is being spoken and costs are flowing
            n = await db.fetchval(
                "SELECT count(*) FROM call_cost_events WHERE call_id = $1 "
                "AND provider = 'elevenlabs'",
                call["id"],
            )
            said = await db.fetchval(
                "SELECT count(*) FROM call_transcripts WHERE call_id = $1 AND speaker = 'caller'",
                call["id"],
            )
            if n and said:
                break
            await asyncio.sleep(0.05)
        await asyncio.sleep(1.0)
        voice.send_signal(signal.SIGKILL)  # no drain, no flush, no goodbye
        await voice.wait()
        sim_call = await stack.twilio.wait_ended(call["twilio_call_sid"], 20)
        assert ("completed", 204) in sim_call.callbacks
        await asyncio.sleep(0.3)
        events = await db.fetch(
            "SELECT provider, unit, quantity, cost_microcents FROM "
            "call_cost_events WHERE call_id = $1",
            call["id"],
        )
        providers = {e["provider"] for e in events}
        assert {"twilio", "deepgram", "elevenlabs"} <= providers
        b = await db.fetchrow(
            "SELECT total_cost_cents FROM call_cost_breakdowns WHERE call_id = $1", call["id"]
        )
        assert b is not None
        assert (
            b["total_cost_cents"] == Decimal(sum(e["cost_microcents"] for e in events)) / 1_000_000
        )
        minutes = sum(e["quantity"] for e in events if e["provider"] == "twilio")
        assert minutes == -(-sim_call.duration // 60)
        c = await db.fetchrow(
            "SELECT status, credits_used, finalized_at FROM calls WHERE id = $1", call["id"]
        )
        assert c["status"] == "completed" and c["finalized_at"] is not None
        assert (
            await db.fetchval(
                "SELECT count(*) FROM credit_transactions WHERE call_id = $1 "
                "AND type = 'call_deduction'",
                call["id"],
            )
            == 1
        )
        rows = await db.fetch("SELECT speaker FROM call_transcripts WHERE call_id = $1", call["id"])
        assert [r["speaker"] for r in rows][:2] == ["persona", "caller"]  # written as it happened
    finally:
        if voice.returncode is None:
            voice.kill()
        await http.close()
        await api.close()
        await stack.stop()
