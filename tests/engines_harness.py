"""The local engines, loaded once per test session (`make test-engines` only)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest_asyncio

from voice_pipeline.settings import REPO_ROOT
from voice_pipeline.sim.local import LocalEngines, load_engines

MODELS_DIR = REPO_ROOT / ".data" / "models"  # the same cache `make run` fills


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
