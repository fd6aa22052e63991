"""The ``callmeback`` console script.

Subcommands (design.md, "Contract"): ``up`` (the whole local stack), ``migrate``, ``serve-api``,
``serve-voice``, ``call``, ``sim``. Expected failures (bad settings, database unreachable, a
broken migration, a port in use) print one line naming the cause and exit non-zero.
"""

from __future__ import annotations

import argparse
import asyncio
import errno
import signal
import sys
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from voice_pipeline.db import DatabaseUnavailable, MigrationError, resolve_dsn
from voice_pipeline.db.migrate import discover, migrate
from voice_pipeline.db.pool import connect, redact_dsn
from voice_pipeline.logs import configure_logging, get_logger
from voice_pipeline.settings import ConfigError, Settings

log = get_logger("callmeback")

EXIT_USAGE = 2


class StartupError(Exception):
    """A one-line, user-facing reason the command cannot run."""


def _run(coro: Coroutine[Any, Any, int]) -> int:
    try:
        import uvloop

        return uvloop.run(coro)
    except ImportError:  # pragma: no cover - uvloop is absent on Windows only
        return asyncio.run(coro)


async def _migrate(settings: Settings) -> list[str]:
    dsn = await resolve_dsn(settings)
    conn = await connect(dsn, timeout=settings.db_connect_timeout)
    try:
        applied = await migrate(conn)
    finally:
        await conn.close()
    return [m.path.name for m in applied]


async def _pending(settings: Settings) -> list[str]:
    dsn = await resolve_dsn(settings)
    conn = await connect(dsn, timeout=settings.db_connect_timeout)
    try:
        exists = await conn.fetchval("SELECT to_regclass('schema_migrations') IS NOT NULL")
        done = (
            {r["version"] for r in await conn.fetch("SELECT version FROM schema_migrations")}
            if exists
            else set()
        )
    finally:
        await conn.close()
    return [m.path.name for m in discover() if m.version not in done]


def log_providers(settings: Settings) -> None:
    modes = settings.provider_modes()
    standins = sorted(k for k, v in modes.items() if v == "stand-in")
    if standins:
        log.info(
            f"no API key for {', '.join(standins)}: using the local stand-in"
            f"{'s' if len(standins) > 1 else ''} (callmeback sim)",
            **modes,
        )
    else:
        log.info("all providers real", **modes)


async def _serve(
    starters: list[Callable[[], Awaitable[Callable[[], Awaitable[None]]]]],
    on_ready: Callable[[], None] | None = None,
) -> int:
    """Start each service, wait for SIGINT/SIGTERM, then stop them in reverse order."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    stoppers: list[Callable[[], Awaitable[None]]] = []
    try:
        for start in starters:
            stoppers.append(await start())
        if on_ready is not None:
            on_ready()
        await stop.wait()
        log.info("shutting_down")
    finally:
        for stopper in reversed(stoppers):
            await stopper()
    return 0


def _listen_error(var: str, host: str, port: int, err: OSError) -> StartupError:
    if err.errno == errno.EADDRINUSE:
        return StartupError(f"{var} {port} on {host} is already in use")
    return StartupError(f"cannot listen on {host}:{port}: {err}")


def api_starter(settings: Settings) -> Callable[[], Awaitable[Callable[[], Awaitable[None]]]]:
    async def start() -> Callable[[], Awaitable[None]]:
        from aiohttp import web

        from control_api.app import create_app

        runner = web.AppRunner(create_app(settings), shutdown_timeout=10.0, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, settings.api_host, settings.api_port)
        try:
            await site.start()
        except OSError as err:
            await runner.cleanup()
            raise _listen_error("API_PORT", settings.api_host, settings.api_port, err) from err
        log.info("control_api_listening", url=f"http://{settings.api_host}:{settings.api_port}")
        return runner.cleanup

    return start


def voice_starter(settings: Settings) -> Callable[[], Awaitable[Callable[[], Awaitable[None]]]]:
    async def start() -> Callable[[], Awaitable[None]]:
        from voice_pipeline.db import create_pool
        from voice_pipeline.server import VoiceServer

        pool = await create_pool(await resolve_dsn(settings), settings)
        server = VoiceServer(settings, pool)
        try:
            await server.start(settings.voice_host, settings.voice_port)
        except OSError as err:
            await pool.close()
            raise _listen_error(
                "VOICE_PORT", settings.voice_host, settings.voice_port, err
            ) from err
        log.info(
            "voice_server_listening",
            stream=settings.voice_ws_url,
            listen=f"{settings.voice_host}:{settings.voice_port}",
        )

        async def stop() -> None:
            await server.stop()  # drains live calls: goodbye, flush, close the books
            await pool.close()

        return stop

    return start


async def cmd_serve_voice(settings: Settings, args: argparse.Namespace) -> int:
    pending = await _pending(settings)
    if pending:
        raise StartupError(f"{len(pending)} migration(s) pending: run `callmeback migrate`")
    log_providers(settings)
    return await _serve([voice_starter(settings)])


def sim_starter(
    settings: Settings, summary: dict[str, str] | None = None
) -> Callable[[], Awaitable[Callable[[], Awaitable[None]]]]:
    """The stand-ins, with the local engines behind them unless CALLMEBACK_ENGINES=scripted."""

    async def start() -> Callable[[], Awaitable[None]]:
        from voice_pipeline.sim.local import LocalEngines, load_engines
        from voice_pipeline.sim.stack import SimStack

        engines = LocalEngines()
        if settings.engines == "auto":
            print("loading the local engines (Whisper, Piper, llama.cpp) …", flush=True)
            engines = await load_engines(settings.data_dir / "models")
        else:
            engines.summary = dict.fromkeys(("stt", "tts", "llm"), "scripted (CALLMEBACK_ENGINES)")
        log.info("local_engines", **engines.summary)
        stack = SimStack(settings, engines=engines)
        try:
            urls = await stack.start()
        except OSError as err:
            engines.close()
            raise StartupError(f"cannot start the provider stand-ins: {err}") from err
        log.info("stand_ins_listening", **urls)
        if summary is not None:
            behind = {"deepgram": "stt", "llm": "llm", "elevenlabs": "tts"}
            modes = settings.provider_modes()
            for name, url in urls.items():
                if modes[name] != "stand-in":
                    continue
                what = engines.summary.get(behind.get(name, ""), "")
                summary[name] = f"stand-in {url}" + (f" — {what}" if what else "")
        return stack.stop

    return start


def print_summary(settings: Settings, dsn: str, providers: dict[str, str]) -> None:
    """One human-readable block: what runs where (the logs carry the same as events)."""
    db = f"embedded PostgreSQL ({settings.data_dir / 'pg'})" if not settings.database_url else dsn
    rows = [
        ("control API", settings.public_base_url),
        ("softphone", f"{settings.public_base_url}/phone"),
        (
            "voice server",
            f"{settings.voice_ws_url} (listening on {settings.voice_host}:{settings.voice_port})",
        ),
        ("database", db),
        *(
            (name, providers.get(name, "real"))
            for name in ("twilio", "deepgram", "llm", "elevenlabs")
        ),
    ]
    width = max(len(k) for k, _ in rows)
    lines = ["", "callmeback is up:"]
    lines += [f"  {k.ljust(width)}  {v}" for k, v in rows]
    lines += [
        "",
        "  talk to a persona: open the softphone, or in another terminal run",
        "    .venv/bin/callmeback call --persona brad",
        "  Ctrl-C stops everything.",
        "",
    ]
    print("\n".join(lines), flush=True)


async def cmd_sim(settings: Settings, args: argparse.Namespace) -> int:
    return await _serve([sim_starter(settings)])


async def cmd_migrate(settings: Settings, args: argparse.Namespace) -> int:
    applied = await _migrate(settings)
    log.info("migrations_applied" if applied else "migrations_up_to_date", files=applied)
    return 0


async def cmd_serve_api(settings: Settings, args: argparse.Namespace) -> int:
    if args.migrate:
        await _migrate(settings)
    else:
        pending = await _pending(settings)
        if pending:
            raise StartupError(
                f"{len(pending)} migration(s) pending ({pending[0]}…): run `callmeback migrate` "
                "or pass --migrate"
            )
    log_providers(settings)
    return await _serve([api_starter(settings)])


async def cmd_up(settings: Settings, args: argparse.Namespace) -> int:
    dsn = await resolve_dsn(settings)
    log.info("database", dsn=redact_dsn(dsn), embedded=settings.database_url is None)
    await _migrate(settings)
    log_providers(settings)
    providers: dict[str, str] = {}
    starters = [voice_starter(settings), api_starter(settings)]
    if "stand-in" in settings.provider_modes().values():
        starters.insert(0, sim_starter(settings, providers))
    log.info(
        "stack", api=f"http://{settings.api_host}:{settings.api_port}", voice=settings.voice_ws_url
    )
    return await _serve(
        starters, on_ready=lambda: print_summary(settings, redact_dsn(dsn), providers)
    )


async def cmd_call(settings: Settings, args: argparse.Namespace) -> int:
    from control_api.demo_call import DEFAULT_LINES, DemoError, run_demo

    try:
        return await run_demo(settings, args.persona, args.say or DEFAULT_LINES)
    except DemoError as err:
        raise StartupError(str(err)) from err


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="callmeback", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("up", help="the whole local stack: database, migrations, API, voice, stand-ins")
    sub.add_parser("migrate", help="apply pending database migrations")
    p = sub.add_parser("serve-api", help="the control API")
    p.add_argument("--migrate", action="store_true", help="apply pending migrations first")
    sub.add_parser("serve-voice", help="the voice WebSocket server")
    p = sub.add_parser("call", help="place a call through the local telephony stand-in")
    p.add_argument("--persona", default="brad")
    p.add_argument("--say", action="append", help="a line the caller says (repeatable)")
    sub.add_parser("sim", help="the provider stand-ins alone")
    return parser


COMMANDS: dict[str, Callable[[Settings, argparse.Namespace], Coroutine[Any, Any, int]]] = {
    "up": cmd_up,
    "migrate": cmd_migrate,
    "serve-api": cmd_serve_api,
    "serve-voice": cmd_serve_voice,
    "call": cmd_call,
    "sim": cmd_sim,
}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = Settings.from_env()
    except ConfigError as err:
        print(f"callmeback: configuration error: {err}", file=sys.stderr)
        return EXIT_USAGE
    configure_logging(settings.log_format, settings.log_level)
    try:
        return _run(COMMANDS[args.command](settings, args))
    except (StartupError, DatabaseUnavailable, MigrationError) as err:
        print(f"callmeback {args.command}: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
