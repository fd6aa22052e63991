"""The audio codec of the phone path: 8 kHz μ-law, 20 ms frames of 160 bytes.

The hot path never transcodes (Twilio's μ-law goes to Deepgram as is; ElevenLabs' ``ulaw_8000``
goes to Twilio as is); these helpers serve framing, level measurement and the stand-ins.
``audioop`` is the C implementation (stdlib up to 3.12, ``audioop-lts`` from 3.13).
"""

from __future__ import annotations

import warnings
import wave
from pathlib import Path

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop

SAMPLE_RATE = 8000
FRAME_MS = 20
FRAME_BYTES = SAMPLE_RATE * FRAME_MS // 1000  # 160 μ-law bytes = 20 ms
ULAW_SILENCE_BYTE = 0xFF  # μ-law code for 0
SILENCE_FRAME = bytes([ULAW_SILENCE_BYTE]) * FRAME_BYTES


def ulaw_to_pcm16(data: bytes) -> bytes:
    return audioop.ulaw2lin(data, 2)


def alaw_to_pcm16(data: bytes) -> bytes:
    return audioop.alaw2lin(data, 2)


def pcm16_to_alaw(data: bytes) -> bytes:
    return audioop.lin2alaw(data, 2)


def pcm16_to_ulaw(data: bytes) -> bytes:
    return audioop.lin2ulaw(data, 2)


def wav_to_ulaw(path: str | Path) -> bytes:
    """A WAV file (any rate, mono or stereo, 8/16-bit PCM) as 8 kHz μ-law."""
    with wave.open(str(path), "rb") as w:
        width, channels, rate = w.getsampwidth(), w.getnchannels(), w.getframerate()
        data = w.readframes(w.getnframes())
    if width == 1:  # WAV 8-bit PCM is unsigned
        data = audioop.bias(data, 1, -128)
    if width != 2:
        data = audioop.lin2lin(data, width, 2)
    if channels == 2:
        data = audioop.tomono(data, 2, 0.5, 0.5)
    elif channels != 1:
        raise ValueError(f"{path}: {channels} channels; mono or stereo only")
    if rate != SAMPLE_RATE:
        data, _ = audioop.ratecv(data, 2, 1, rate, SAMPLE_RATE, None)
    return audioop.lin2ulaw(data, 2)


def split_frames(data: bytes, *, pad: bool = True) -> list[bytes]:
    """Whole 20 ms frames; the tail is padded with silence (or dropped if ``pad`` is false)."""
    out = [data[i : i + FRAME_BYTES] for i in range(0, len(data), FRAME_BYTES)]
    if out and len(out[-1]) < FRAME_BYTES:
        if pad:
            out[-1] = out[-1] + bytes([ULAW_SILENCE_BYTE]) * (FRAME_BYTES - len(out[-1]))
        else:
            out.pop()
    return out


class FrameBuffer:
    """Accumulates arbitrary-sized μ-law chunks and yields whole 20 ms frames."""

    __slots__ = ("_buf",)

    def __init__(self) -> None:
        self._buf = bytearray()

    def push(self, data: bytes) -> list[bytes]:
        self._buf += data
        n = len(self._buf) // FRAME_BYTES * FRAME_BYTES
        if not n:
            return []
        chunk = bytes(self._buf[:n])
        del self._buf[:n]
        return [chunk[i : i + FRAME_BYTES] for i in range(0, n, FRAME_BYTES)]

    def flush(self) -> list[bytes]:
        """The remainder as one silence-padded frame (end of an utterance)."""
        if not self._buf:
            return []
        tail = bytes(self._buf) + bytes([ULAW_SILENCE_BYTE]) * (FRAME_BYTES - len(self._buf))
        self._buf.clear()
        return [tail]

    def clear(self) -> None:
        self._buf.clear()

    def __len__(self) -> int:
        return len(self._buf)
