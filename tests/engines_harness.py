"""The local engines, loaded once per test session (`make test-engines` only)."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest_asyncio

from tests.voice_harness import VoiceRig, voice_rig
from voice_pipeline.settings import REPO_ROOT
from voice_pipeline.sim.local import LocalEngines, load_engines

MODELS_DIR = REPO_ROOT / ".data" / "models"  # the same cache `make run` fills


def words(text: str) -> set[str]:
    return set(re.findall(r"[a-z']+", text.lower()))


def found(stems: tuple[str, ...], text: str) -> int:
    """How many of ``stems`` occur in ``text`` ("help" in "helped": Piper's voice varies a
    little from one synthesis to the next, and Whisper's spelling with it)."""
    return sum(stem in text.lower() for stem in stems)


@pytest_asyncio.fixture(scope="session")
async def engines() -> AsyncIterator[LocalEngines]:
    loaded = await load_engines(MODELS_DIR)
    missing = [
        role
        for role, engine in (
            ("stt", loaded.recognizer),
            ("tts", loaded.synthesizer),
            ("llm", loaded.llm),
        )
        if engine is None
    ]
    # `make test-engines` installs and builds them all; a missing one is a failure, not a skip.
    assert not missing, f"local engines missing: {missing}: {loaded.summary}"
    yield loaded
    loaded.close()


@pytest_asyncio.fixture
async def engine_rig(
    tmp_path: Path, db: asyncpg.Pool, db_dsn: str, engines: LocalEngines
) -> AsyncIterator[VoiceRig]:
    """The whole product on loopback with the local engines behind the stand-ins."""
    async for rig in voice_rig(tmp_path, db, db_dsn, engines=engines):
        yield rig
