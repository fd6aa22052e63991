"""``callmeback call``: place a call through the local stack and watch it live.

Needs ``make run`` (or ``callmeback up``) running in another terminal. Signs in a local demo
user (created once; its password kept in ``.data/demo-user.json``, 0600, and its daily limit
lifted in the local database), tells the Twilio stand-in's scripted caller what to say, triggers
the call through the control API exactly as the frontend would, then prints each utterance as
it is transcribed and each turn's latency until the call ends.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import sys
from typing import Any

import aiohttp

from voice_pipeline.db import resolve_dsn
from voice_pipeline.db.pool import connect
from voice_pipeline.settings import Settings

DEMO_EMAIL = "demo@callmeback.local"
DEFAULT_LINES = [
    "Hey, can you help me plan a workout for today?",
    "Sounds good. How long should I rest between sets?",
    "Thanks, that's all for now.",
]


class DemoError(Exception):
    pass


def _demo_password(settings: Settings) -> str:
    path = settings.data_dir / "demo-user.json"
    try:
        return str(json.loads(path.read_text())["password"])
    except (OSError, ValueError, KeyError):
        password = secrets.token_urlsafe(18)
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump({"email": DEMO_EMAIL, "password": password}, fh)
        return password


async def _token(http: aiohttp.ClientSession, api: str, settings: Settings) -> str:
    creds = {"email": DEMO_EMAIL, "password": _demo_password(settings)}
    async with http.post(f"{api}/api/auth/login", json=creds) as r:
        if r.status == 200:
            return str((await r.json())["token"])
    async with http.post(f"{api}/api/auth/register", json=creds) as r:
        body = await r.json()
        if r.status != 201:
            raise DemoError(f"cannot sign in the demo user: {body.get('error', body)}")
        return str(body["token"])


async def _lift_limits(settings: Settings) -> None:
    conn = await connect(await resolve_dsn(settings))
    try:
        await conn.execute(
            "UPDATE user_credits SET max_calls_per_day = NULL, "
            "available_credits = GREATEST(available_credits, 30) "
            "WHERE user_id = (SELECT id FROM users WHERE email = $1)",
            DEMO_EMAIL,
        )
    finally:
        await conn.close()


def _latency_line(row: dict[str, Any]) -> str:
    def d(a: str, b: str) -> str:
        return f"{row[b] - row[a]} ms" if row.get(a) is not None and row.get(b) is not None else "-"

    return (
        f"    ⏱  turn {row['turn_id']}: voice-to-voice {row['voice_to_voice_ms']} ms "
        f"(speech end→STT final {d('speech_end_ms', 'stt_final_ms')}, "
        f"LLM first token {d('stt_final_ms', 'llm_first_token_ms')}, "
        f"TTS first byte {d('llm_first_token_ms', 'tts_first_byte_ms')}, "
        f"to first frame {d('tts_first_byte_ms', 'first_media_ms')})"
    )


async def run_demo(
    settings: Settings, persona: str, lines: list[str], out: Any = sys.stdout
) -> int:
    api = settings.public_base_url
    number = "+1555010" + f"{secrets.randbelow(10_000):04d}"
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=15)) as http:
        try:
            async with http.get(f"{api}/ready") as r:
                if r.status != 200:
                    raise DemoError(f"the control API at {api} is not ready")
        except aiohttp.ClientConnectionError:
            raise DemoError(f"nothing answers at {api}: start `make run` first") from None
        token = await _token(http, api, settings)
        await _lift_limits(settings)
        script = {"to": number, "utterances": [{"text": t} for t in lines], "hang_up_after": 1.5}
        try:
            async with http.post(f"{settings.twilio_api_base}/_sim/callers", json=script) as r:
                if r.status != 201:
                    raise DemoError("the Twilio stand-in refused the caller script")
        except aiohttp.ClientConnectionError:
            raise DemoError(
                "the Twilio stand-in is not running (real Twilio configured?)"
            ) from None
        auth = {"Authorization": f"Bearer {token}"}
        async with http.post(
            f"{api}/api/calls/trigger",
            headers=auth,
            json={"persona_id": persona, "phone_number": number},
        ) as r:
            body = await r.json()
            if r.status != 201:
                raise DemoError(f"trigger refused: {body['error']['message']}")
        call_id = body["call"]["id"]
        print(f"📞 calling {number} as {persona} (call {call_id})", file=out, flush=True)
        shown_rows, shown_turns = 0, set()
        detail: dict[str, Any] = {}
        for _ in range(2400):  # 10 minutes at most
            await asyncio.sleep(0.25)
            async with http.get(f"{api}/api/calls/{call_id}", headers=auth) as r:
                detail = await r.json()
            for row in detail["transcript"][shown_rows:]:
                who = "you" if row["speaker"] == "caller" else row["speaker"]
                cut = " [interrupted]" if row["interrupted"] else ""
                print(
                    f"[{row['start_ms'] / 1000:6.1f}s] {who}: {row['text']}{cut}",
                    file=out,
                    flush=True,
                )
            shown_rows = len(detail["transcript"])
            for lat in detail["latency"]:
                if lat["turn_id"] not in shown_turns and lat["voice_to_voice_ms"] is not None:
                    shown_turns.add(lat["turn_id"])
                    print(_latency_line(lat), file=out, flush=True)
            if not detail["call"]["is_live"]:
                break
        c = detail["call"]
        cost = detail.get("cost_breakdown") or {}
        print(
            f"✔ call {c['status']}: {c['duration_seconds']} s, {c['credits_used']} credit(s), "
            f"cost {cost.get('total_cost_cents', '0')} ¢",
            file=out,
            flush=True,
        )
    return 0
