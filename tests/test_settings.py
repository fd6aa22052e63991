"""Guards the settings object: every malformed or missing value is one clear error naming
its variable; keys select real providers, their absence the stand-ins."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest

from voice_pipeline.settings import ConfigError, Settings

BASE = {"JWT_SECRET": "s" * 40, "ADMIN_TOKEN": "a" * 20}


def load(tmp_path: Path, **env: str) -> Settings:
    return Settings.from_env({"CALLMEBACK_DATA_DIR": str(tmp_path), **BASE, **env})


@pytest.mark.parametrize(
    ("env", "var"),
    [
        ({"API_PORT": "eighty"}, "API_PORT"),
        ({"API_PORT": "70000"}, "API_PORT"),
        ({"DATABASE_URL": "mysql://x/y"}, "DATABASE_URL"),
        ({"PUBLIC_BASE_URL": "ftp://x"}, "PUBLIC_BASE_URL"),
        ({"VOICE_WS_URL": "http://x/stream"}, "VOICE_WS_URL"),
        ({"JWT_SECRET": "short"}, "JWT_SECRET"),
        ({"ADMIN_TOKEN": "short"}, "ADMIN_TOKEN"),
        ({"TWILIO_ACCOUNT_SID": "AC" + "1" * 32}, "TWILIO_AUTH_TOKEN"),
        ({"TWILIO_ACCOUNT_SID": "nope", "TWILIO_AUTH_TOKEN": "t"}, "TWILIO_ACCOUNT_SID"),
        ({"RATE_TWILIO_USD_PER_MIN": "-1"}, "RATE_TWILIO_USD_PER_MIN"),
        ({"RATE_LLM_INPUT_USD_PER_MTOK": "cheap"}, "RATE_LLM_INPUT_USD_PER_MTOK"),
        ({"DB_COMMAND_TIMEOUT": "0"}, "DB_COMMAND_TIMEOUT"),
        ({"LOG_FORMAT": "xml"}, "LOG_FORMAT"),
        ({"APP_ENV": "staging"}, "APP_ENV"),
        ({"CORS_ORIGINS": "https://ok.example, not-a-url"}, "CORS_ORIGINS"),
        ({"DEEPGRAM_URL": "https://api.deepgram.com"}, "DEEPGRAM_URL"),
    ],
)
def test_malformed_values_name_the_variable(tmp_path: Path, env: dict[str, str], var: str) -> None:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, **env)
    assert info.value.var == var
    assert str(info.value).startswith(f"{var}: ")
    assert "\n" not in str(info.value)


def test_production_requires_secrets_and_real_endpoints(tmp_path: Path) -> None:
    env = {"APP_ENV": "production", "CALLMEBACK_DATA_DIR": str(tmp_path)}
    with pytest.raises(ConfigError, match="^DATABASE_URL: is required"):
        Settings.from_env(env)
    env["DATABASE_URL"] = "postgresql://u:p@db/x"
    with pytest.raises(ConfigError, match="^JWT_SECRET: is required"):
        Settings.from_env(env)
    env.update(BASE)
    with pytest.raises(ConfigError, match="^PUBLIC_BASE_URL: must be https"):
        Settings.from_env(env)
    env["PUBLIC_BASE_URL"] = "https://api.example.com"
    with pytest.raises(ConfigError, match="^VOICE_WS_URL: must be wss"):
        Settings.from_env(env)
    env["VOICE_WS_URL"] = "wss://voice.example.com/stream"
    with pytest.raises(ConfigError, match="^TWILIO_ACCOUNT_SID: is required"):
        Settings.from_env(env)
    env.update(TWILIO_ACCOUNT_SID="AC" + "a" * 32, TWILIO_AUTH_TOKEN="tok")
    s = Settings.from_env(env)
    assert s.log_format == "json" and s.twilio_api_base == "https://api.twilio.com"


def test_no_keys_means_stand_ins_on_loopback(tmp_path: Path) -> None:
    s = load(tmp_path)
    assert set(s.provider_modes().values()) == {"stand-in"}
    assert s.deepgram_url.startswith("ws://127.0.0.1:")
    assert s.llm_base_url.startswith("http://127.0.0.1:") and s.llm_base_url.endswith("/v1")
    assert s.twilio_api_base.startswith("http://127.0.0.1:")


def test_keys_select_real_providers_with_vendor_defaults(tmp_path: Path) -> None:
    s = load(tmp_path, DEEPGRAM_API_KEY="dg", LLM_API_KEY="csk", ELEVENLABS_API_KEY="xi")
    modes = s.provider_modes()
    assert modes == {"twilio": "stand-in", "deepgram": "real", "llm": "real", "elevenlabs": "real"}
    assert s.deepgram_url == "wss://api.deepgram.com"
    assert s.llm_base_url == "https://api.cerebras.ai/v1" and s.llm_model == "gpt-oss-120b"
    # An explicit URL wins: the same client code talks to a stand-in with a key set.
    s = load(tmp_path, LLM_API_KEY="csk", LLM_BASE_URL="http://127.0.0.1:9/v1")
    assert s.llm_base_url == "http://127.0.0.1:9/v1"


def test_rates_are_decimals_with_documented_defaults(tmp_path: Path) -> None:
    s = load(tmp_path, RATE_ELEVENLABS_USD_PER_KCHAR="0.06")
    assert s.rates.twilio_usd_per_min == Decimal("0.0130")
    assert s.rates.elevenlabs_usd_per_kchar == Decimal("0.06")
    assert isinstance(s.rates.llm_output_usd_per_mtok, Decimal)


def test_development_secrets_are_generated_once_and_kept_private(tmp_path: Path) -> None:
    a = Settings.from_env({"CALLMEBACK_DATA_DIR": str(tmp_path)})
    b = Settings.from_env({"CALLMEBACK_DATA_DIR": str(tmp_path)})
    assert a.jwt_secret == b.jwt_secret and len(a.jwt_secret) >= 32
    assert a.admin_token == b.admin_token
    assert (tmp_path / "dev-secrets.json").stat().st_mode & 0o077 == 0
