"""Guards `callmeback call`: against a running stack it signs in the demo user, scripts the
Twilio stand-in's caller, places the call through the API and prints the live transcript and
each turn's latency; with nothing running it says so in one line."""

from __future__ import annotations

from pathlib import Path

from tests.cli_helpers import cli_env, free_port, run_cli
from tests.voice_harness import VoiceRig


async def test_call_prints_the_live_conversation(rig: VoiceRig, tmp_path: Path) -> None:
    s = rig.settings
    env = cli_env(
        tmp_path,
        DATABASE_URL=str(s.database_url),
        JWT_SECRET=s.jwt_secret,
        ADMIN_TOKEN=s.admin_token,
        PUBLIC_BASE_URL=s.public_base_url,
        TWILIO_ACCOUNT_SID=s.twilio_account_sid,
        TWILIO_AUTH_TOKEN=s.twilio_auth_token,
        TWILIO_API_BASE=s.twilio_api_base,
        LOG_LEVEL="warning",
    )
    code, out, err = await run_cli(
        "call", "--persona", "sarah", "--say", "I had a long day", env=env, timeout=90
    )
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].startswith("📞 calling +1555010")
    assert any("persona: Hi, it's Sarah." in ln for ln in lines)
    assert any("you: I had a long day" in ln for ln in lines)
    assert any("voice-to-voice" in ln and "LLM first token" in ln for ln in lines)
    assert lines[-1].startswith("✔ call completed")
    caller_row = await rig.db.fetchrow(
        "SELECT start_ms, end_ms FROM call_transcripts WHERE speaker = 'caller'"
    )
    assert caller_row["start_ms"] < caller_row["end_ms"]  # from speech start to its end


async def test_call_without_a_stack_says_what_to_do(tmp_path: Path) -> None:
    env = cli_env(tmp_path, PUBLIC_BASE_URL=f"http://127.0.0.1:{free_port()}")
    code, _, err = await run_cli("call", env=env)
    assert code == 1 and "start `make run` first" in err and len(err.strip().splitlines()) == 1
