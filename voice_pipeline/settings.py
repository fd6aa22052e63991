"""One settings object, read from the environment once and validated at start.

A missing or malformed value raises :class:`ConfigError` whose message names the variable;
the CLI prints that single line and exits 2. Nothing else in the code base reads ``os.environ``.

Provider selection: a provider whose API key is set is the real one (its URL defaults to the
vendor's); a provider without a key is the local stand-in (its URL defaults to the stand-in's
loopback address). :meth:`Settings.provider_modes` says which is which, for one log line.
"""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

REPO_ROOT = Path(__file__).resolve().parent.parent

Environment = Literal["development", "production", "test"]


class ConfigError(ValueError):
    """A setting is missing or malformed. ``str(err)`` is one line naming the variable."""

    def __init__(self, var: str, problem: str) -> None:
        super().__init__(f"{var}: {problem}")
        self.var = var


# Loopback ports of the local stand-ins (`callmeback sim`): SIM_BASE_PORT + offset.
SIM_OFFSETS = {"twilio": 0, "deepgram": 1, "elevenlabs": 2, "llm": 3}
SIM_PORTS = {name: 8731 + off for name, off in SIM_OFFSETS.items()}

# Prices (USD). Sources: seed 004 §8.1 for Twilio; ../shared/protocols.md §2.6, §3.5, §4.6 for the
# others, where the seed's models (Nova-2 batch, Turbo v2.5, llama3.1-8b) are out of date.
DEFAULT_RATES = {
    "RATE_TWILIO_USD_PER_MIN": "0.0130",
    "RATE_DEEPGRAM_USD_PER_MIN": "0.0048",
    "RATE_LLM_INPUT_USD_PER_MTOK": "0.35",
    "RATE_LLM_OUTPUT_USD_PER_MTOK": "0.75",
    "RATE_ELEVENLABS_USD_PER_KCHAR": "0.05",
}


@dataclass(frozen=True, slots=True)
class Rates:
    twilio_usd_per_min: Decimal
    deepgram_usd_per_min: Decimal
    llm_input_usd_per_mtok: Decimal
    llm_output_usd_per_mtok: Decimal
    elevenlabs_usd_per_kchar: Decimal


@dataclass(frozen=True, slots=True)
class Settings:
    env: Environment
    data_dir: Path
    database_url: str | None
    db_pool_min: int
    db_pool_max: int
    db_connect_timeout: float
    db_command_timeout: float
    jwt_secret: str
    admin_token: str
    public_base_url: str
    voice_ws_url: str
    api_host: str
    api_port: int
    voice_host: str
    voice_port: int
    cors_origins: tuple[str, ...]
    log_format: Literal["json", "console"]
    log_level: str
    twilio_account_sid: str
    twilio_auth_token: str
    twilio_phone_number: str
    twilio_api_base: str
    deepgram_api_key: str | None
    deepgram_url: str
    deepgram_model: str
    llm_base_url: str
    llm_api_key: str | None
    llm_model: str
    elevenlabs_api_key: str | None
    elevenlabs_url: str
    elevenlabs_model: str
    rates: Rates
    twilio_is_real: bool = field(default=False)
    sim_ports: dict[str, int] = field(default_factory=lambda: dict(SIM_PORTS))
    # What speaks behind the stand-ins: "auto" = the local engines that are installed (Whisper,
    # Piper, llama.cpp), "scripted" = tone-coded speech and scripted replies (tests, benchmarks).
    engines: str = "auto"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        return _load(os.environ if environ is None else environ)

    def provider_modes(self) -> dict[str, str]:
        """``{"twilio": "real"|"stand-in", ...}`` for the start-up log line."""
        return {
            "twilio": "real" if self.twilio_is_real else "stand-in",
            "deepgram": "real" if self.deepgram_api_key else "stand-in",
            "llm": "real" if self.llm_api_key else "stand-in",
            "elevenlabs": "real" if self.elevenlabs_api_key else "stand-in",
        }

    @property
    def twiml_url(self) -> str:
        return f"{self.public_base_url}/api/voice/twiml"

    @property
    def status_callback_url(self) -> str:
        return f"{self.public_base_url}/api/voice/status"


def _load(env: Mapping[str, str]) -> Settings:
    def get(name: str, default: str | None = None) -> str | None:
        value = env.get(name)
        if value is None or value.strip() == "":
            return default
        return value.strip()

    app_env = get("APP_ENV", "development")
    if app_env not in ("development", "production", "test"):
        raise ConfigError("APP_ENV", f"must be development, production or test, not {app_env!r}")
    production = app_env == "production"

    data_dir = Path(get("CALLMEBACK_DATA_DIR") or str(REPO_ROOT / ".data")).expanduser()

    database_url = get("DATABASE_URL")
    if database_url is not None:
        scheme = urlsplit(database_url).scheme
        if scheme not in ("postgres", "postgresql"):
            raise ConfigError("DATABASE_URL", "must start with postgresql:// (or postgres://)")
    elif production:
        raise ConfigError("DATABASE_URL", "is required when APP_ENV=production")

    # Secrets: required in production; in development generated once and kept under data_dir
    # (mode 0600) so tokens survive restarts without anyone pasting a secret into a file.
    jwt_secret = get("JWT_SECRET")
    admin_token = get("ADMIN_TOKEN")
    if production:
        if jwt_secret is None:
            raise ConfigError("JWT_SECRET", "is required when APP_ENV=production")
        if admin_token is None:
            raise ConfigError("ADMIN_TOKEN", "is required when APP_ENV=production")
    if jwt_secret is None or admin_token is None:
        dev = _dev_secrets(data_dir)
        jwt_secret = jwt_secret or dev["JWT_SECRET"]
        admin_token = admin_token or dev["ADMIN_TOKEN"]
    if len(jwt_secret) < 32:
        raise ConfigError("JWT_SECRET", "must be at least 32 characters")
    if len(admin_token) < 16:
        raise ConfigError("ADMIN_TOKEN", "must be at least 16 characters")

    api_host = get("API_HOST", "127.0.0.1") or "127.0.0.1"
    api_port = _port(env, "API_PORT", 8080)
    voice_host = get("VOICE_HOST", "127.0.0.1") or "127.0.0.1"
    voice_port = _port(env, "VOICE_PORT", 8081)

    public_base_url = _url(
        "PUBLIC_BASE_URL",
        get("PUBLIC_BASE_URL", f"http://127.0.0.1:{api_port}"),
        ("http", "https"),
    ).rstrip("/")
    voice_ws_url = _url(
        "VOICE_WS_URL", get("VOICE_WS_URL", f"ws://127.0.0.1:{voice_port}/stream"), ("ws", "wss")
    )
    if production:
        if not public_base_url.startswith("https://"):
            raise ConfigError("PUBLIC_BASE_URL", "must be https:// in production (Twilio signs it)")
        if not voice_ws_url.startswith("wss://"):
            raise ConfigError(
                "VOICE_WS_URL", "must be wss:// in production (Twilio only speaks wss)"
            )

    sim_base = _int(env, "SIM_BASE_PORT", 8731, lo=1024, hi=65532)
    sim_ports = {name: sim_base + off for name, off in SIM_OFFSETS.items()}

    twilio_sid = get("TWILIO_ACCOUNT_SID")
    twilio_token = get("TWILIO_AUTH_TOKEN")
    if (twilio_sid is None) != (twilio_token is None):
        missing = "TWILIO_AUTH_TOKEN" if twilio_token is None else "TWILIO_ACCOUNT_SID"
        raise ConfigError(missing, "must be set together with the other Twilio credential")
    twilio_real = twilio_sid is not None
    if twilio_sid is not None and not (twilio_sid.startswith("AC") and len(twilio_sid) == 34):
        raise ConfigError("TWILIO_ACCOUNT_SID", "must look like AC followed by 32 hex characters")
    twilio_api_base = _url(
        "TWILIO_API_BASE",
        get(
            "TWILIO_API_BASE",
            "https://api.twilio.com" if twilio_real else f"http://127.0.0.1:{sim_ports['twilio']}",
        ),
        ("http", "https"),
    ).rstrip("/")
    if production and not twilio_real:
        raise ConfigError("TWILIO_ACCOUNT_SID", "is required when APP_ENV=production")

    deepgram_key = get("DEEPGRAM_API_KEY")
    deepgram_url = _url(
        "DEEPGRAM_URL",
        get(
            "DEEPGRAM_URL",
            "wss://api.deepgram.com" if deepgram_key else f"ws://127.0.0.1:{sim_ports['deepgram']}",
        ),
        ("ws", "wss"),
    ).rstrip("/")
    llm_key = get("LLM_API_KEY")
    llm_base_url = _url(
        "LLM_BASE_URL",
        get(
            "LLM_BASE_URL",
            "https://api.cerebras.ai/v1" if llm_key else f"http://127.0.0.1:{sim_ports['llm']}/v1",
        ),
        ("http", "https"),
    ).rstrip("/")
    eleven_key = get("ELEVENLABS_API_KEY")
    eleven_url = _url(
        "ELEVENLABS_URL",
        get(
            "ELEVENLABS_URL",
            "wss://api.elevenlabs.io"
            if eleven_key
            else f"ws://127.0.0.1:{sim_ports['elevenlabs']}",
        ),
        ("ws", "wss", "http", "https"),
    ).rstrip("/")

    log_format = get("LOG_FORMAT", "json" if production else "console")
    if log_format not in ("json", "console"):
        raise ConfigError("LOG_FORMAT", "must be json or console")
    log_level = (get("LOG_LEVEL", "info") or "info").lower()
    if log_level not in ("debug", "info", "warning", "error"):
        raise ConfigError("LOG_LEVEL", "must be debug, info, warning or error")

    cors = tuple(
        o.strip().rstrip("/") for o in (get("CORS_ORIGINS", "") or "").split(",") if o.strip()
    )
    for origin in cors:
        _url("CORS_ORIGINS", origin, ("http", "https"))

    engines = get("CALLMEBACK_ENGINES", "auto") or "auto"
    if engines not in ("auto", "scripted"):
        raise ConfigError("CALLMEBACK_ENGINES", f"must be auto or scripted, not {engines!r}")

    # Dev/test Twilio identity for the stand-in: fixed, obviously fake, never a real credential.
    sim_sid = "AC" + "0" * 32
    return Settings(
        env=app_env,  # type: ignore[arg-type]
        data_dir=data_dir,
        database_url=database_url,
        db_pool_min=_int(env, "DB_POOL_MIN", 1, lo=0, hi=100),
        db_pool_max=_int(env, "DB_POOL_MAX", 10, lo=1, hi=500),
        db_connect_timeout=_float(env, "DB_CONNECT_TIMEOUT", 10.0, lo=0.1, hi=300),
        db_command_timeout=_float(env, "DB_COMMAND_TIMEOUT", 30.0, lo=0.1, hi=3600),
        jwt_secret=jwt_secret,
        admin_token=admin_token,
        public_base_url=public_base_url,
        voice_ws_url=voice_ws_url,
        api_host=api_host,
        api_port=api_port,
        voice_host=voice_host,
        voice_port=voice_port,
        cors_origins=cors,
        log_format=log_format,  # type: ignore[arg-type]
        log_level=log_level,
        twilio_account_sid=twilio_sid or sim_sid,
        twilio_auth_token=twilio_token or "sim-auth-token-not-secret",
        twilio_phone_number=get("TWILIO_PHONE_NUMBER", "+15005550006") or "+15005550006",
        twilio_api_base=twilio_api_base,
        deepgram_api_key=deepgram_key,
        deepgram_url=deepgram_url,
        deepgram_model=get("DEEPGRAM_MODEL", "nova-3") or "nova-3",
        llm_base_url=llm_base_url,
        llm_api_key=llm_key,
        llm_model=get("LLM_MODEL", "gpt-oss-120b") or "gpt-oss-120b",
        elevenlabs_api_key=eleven_key,
        elevenlabs_url=eleven_url,
        elevenlabs_model=get("ELEVENLABS_MODEL", "eleven_flash_v2_5") or "eleven_flash_v2_5",
        rates=Rates(
            twilio_usd_per_min=_decimal(env, "RATE_TWILIO_USD_PER_MIN"),
            deepgram_usd_per_min=_decimal(env, "RATE_DEEPGRAM_USD_PER_MIN"),
            llm_input_usd_per_mtok=_decimal(env, "RATE_LLM_INPUT_USD_PER_MTOK"),
            llm_output_usd_per_mtok=_decimal(env, "RATE_LLM_OUTPUT_USD_PER_MTOK"),
            elevenlabs_usd_per_kchar=_decimal(env, "RATE_ELEVENLABS_USD_PER_KCHAR"),
        ),
        twilio_is_real=twilio_real,
        sim_ports=sim_ports,
        engines=engines,
    )


def _dev_secrets(data_dir: Path) -> dict[str, str]:
    path = data_dir / "dev-secrets.json"
    try:
        data = json.loads(path.read_text())
        if isinstance(data, dict) and {"JWT_SECRET", "ADMIN_TOKEN"} <= data.keys():
            return {k: str(data[k]) for k in ("JWT_SECRET", "ADMIN_TOKEN")}
    except FileNotFoundError:
        pass
    except (OSError, ValueError) as err:
        raise ConfigError("JWT_SECRET", f"unset, and {path} is unreadable ({err})") from err
    data = {"JWT_SECRET": secrets.token_urlsafe(48), "ADMIN_TOKEN": secrets.token_urlsafe(24)}
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process won the race: use its secrets
        return _dev_secrets(data_dir)
    except OSError as err:
        raise ConfigError("JWT_SECRET", f"unset, and cannot write {path} ({err})") from err
    with os.fdopen(fd, "w") as fh:
        json.dump(data, fh)
    return data


def _number(
    env: Mapping[str, str], name: str, default: float, parse: type, what: str, lo: float, hi: float
) -> Any:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = parse(raw)
    except ValueError:
        raise ConfigError(name, f"must be {what}, not {raw!r}") from None
    if not lo <= value <= hi:
        raise ConfigError(name, f"must be between {lo} and {hi}, not {value}")
    return value


def _int(env: Mapping[str, str], name: str, default: int, *, lo: int, hi: int) -> int:
    return int(_number(env, name, default, int, "a whole number", lo, hi))


def _port(env: Mapping[str, str], name: str, default: int) -> int:
    return _int(env, name, default, lo=0, hi=65535)


def _float(env: Mapping[str, str], name: str, default: float, *, lo: float, hi: float) -> float:
    return float(_number(env, name, default, float, "a number", lo, hi))


def _decimal(env: Mapping[str, str], name: str) -> Decimal:
    raw = env.get(name, "").strip() or DEFAULT_RATES[name]
    try:
        value = Decimal(raw)
    except InvalidOperation:
        raise ConfigError(name, f"must be a decimal number, not {raw!r}") from None
    if not value.is_finite() or value < 0:
        raise ConfigError(name, "must be a non-negative decimal number")
    return value


def _url(name: str, value: str | None, schemes: tuple[str, ...]) -> str:
    assert value is not None
    parts = urlsplit(value)
    if parts.scheme not in schemes or not parts.netloc:
        raise ConfigError(
            name, f"must be a {'/'.join(s + '://' for s in schemes)} URL, not {value!r}"
        )
    return value
