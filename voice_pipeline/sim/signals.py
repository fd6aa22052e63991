"""Deterministic "speech" for the scripted caller and the scripted recognizer.

A scripted utterance is audio a recognizer can tie back to its text without a speech model:
it opens with a code of four 40 ms tones (one of 16 frequencies each, i.e. a 16-bit utterance
number) and continues with voiced, speech-level noise for the utterance's natural length. The
scripted recognizer detects speech by energy, as Deepgram's VAD would, decodes the number with
Goertzel filters and looks the text up in the shared :class:`ScriptBook`. μ-law passes through
the pipeline untouched, so the code survives intact.

The persona's synthetic voice (ElevenLabs stand-in) is a different, steady tone family, so a
listener can tell the two apart by pitch.
"""

from __future__ import annotations

import itertools
import threading

import numpy as np

from voice_pipeline.audio import SAMPLE_RATE, pcm16_to_ulaw, ulaw_to_pcm16

SYMBOL_MS = 40
SYMBOLS = 4  # 16 bits
CODE_MS = SYMBOL_MS * SYMBOLS
# 16 tones between 500 Hz and 2,750 Hz, 150 Hz apart: each a whole number of cycles in 40 ms
# (25 Hz resolution), well inside the telephone band.
FREQS = tuple(500 + 150 * i for i in range(16))
SPEECH_LEVEL = 6000  # int16 amplitude: a normal talker on a phone line
MS_PER_WORD = 330  # ~180 words per minute, brisk conversational speech


def _tone(freq: float, ms: int, amp: float, phase: float = 0.0) -> np.ndarray:
    t = np.arange(SAMPLE_RATE * ms // 1000) / SAMPLE_RATE
    return amp * np.sin(2 * np.pi * freq * t + phase)


def utterance_ms(text: str) -> int:
    words = max(1, len(text.split()))
    return max(CODE_MS + 200, words * MS_PER_WORD)


def encode_utterance(number: int, text: str, *, seed: int = 0) -> bytes:
    """μ-law audio for one scripted utterance (code + voiced noise)."""
    if not 0 <= number < 16**SYMBOLS:
        raise ValueError("utterance number out of range")
    digits = [(number >> (4 * (SYMBOLS - 1 - i))) & 0xF for i in range(SYMBOLS)]
    parts = [_tone(FREQS[d], SYMBOL_MS, SPEECH_LEVEL) for d in digits]
    rest_ms = utterance_ms(text) - CODE_MS
    rng = np.random.default_rng(seed + number)
    n = SAMPLE_RATE * rest_ms // 1000
    # Voiced noise: a 140 Hz buzz with harmonics, amplitude-modulated at a syllable rate.
    t = np.arange(n) / SAMPLE_RATE
    buzz = sum(np.sin(2 * np.pi * 140 * k * t) / k for k in range(1, 8))
    envelope = 0.55 + 0.45 * np.sin(2 * np.pi * 4 * t) ** 2
    voiced = SPEECH_LEVEL * 0.6 * buzz * envelope + rng.normal(0, 300, n)
    pcm = np.clip(np.concatenate([*parts, voiced]), -32000, 32000).astype("<i2").tobytes()
    return pcm16_to_ulaw(pcm)


def decode_number(ulaw: bytes) -> int | None:
    """The utterance number from the first ``CODE_MS`` of an utterance, or None."""
    pcm = np.frombuffer(ulaw_to_pcm16(ulaw), dtype="<i2").astype(np.float64)
    n = SAMPLE_RATE * SYMBOL_MS // 1000
    if len(pcm) < n * SYMBOLS:
        return None
    # Power of each candidate tone in each 40 ms block: one matrix product (a DFT at 16 bins).
    blocks = pcm[: n * SYMBOLS].reshape(SYMBOLS, n)
    powers = (blocks @ _COS) ** 2 + (blocks @ _SIN) ** 2  # (SYMBOLS, 16)
    number = 0
    for row in powers:
        ranked = np.sort(row)
        if ranked[-1] < 4 * ranked[-2]:  # no clear tone: not a scripted utterance
            return None
        number = (number << 4) | int(np.argmax(row))
    return number


_T = np.arange(SAMPLE_RATE * SYMBOL_MS // 1000) / SAMPLE_RATE
_COS = np.cos(2 * np.pi * np.outer(_T, FREQS))
_SIN = np.sin(2 * np.pi * np.outer(_T, FREQS))


def persona_voice(ms: int, *, pitch: float = 220.0, amp: float = 5000.0) -> bytes:
    """μ-law audio standing in for synthesized speech of ``ms`` milliseconds."""
    n = SAMPLE_RATE * ms // 1000
    t = np.arange(n) / SAMPLE_RATE
    wave = amp * (0.7 * np.sin(2 * np.pi * pitch * t) + 0.3 * np.sin(2 * np.pi * 2 * pitch * t))
    return pcm16_to_ulaw(wave.astype("<i2").tobytes())


class ScriptBook:
    """Utterance number ↔ text, shared by the scripted caller and the scripted recognizer
    (they live in the stand-ins' process; the server under test sits between them)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._texts: dict[int, str] = {}
        self._next = itertools.count(1)

    def register(self, text: str) -> int:
        with self._lock:
            number = next(self._next) % 16**SYMBOLS or next(self._next)
            self._texts[number] = text
            return number

    def text(self, number: int | None) -> str | None:
        if number is None:
            return None
        with self._lock:
            return self._texts.get(number)
