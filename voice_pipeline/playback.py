"""Outbound audio, sans I/O: pacing frames to Twilio and knowing what the caller really heard.

:class:`Pacer` holds the persona's audio as whole 20 ms frames with a mark after each TTS chunk,
and releases them so that Twilio's playout buffer never holds more than ``lead_ms`` ahead of
real time: enough to ride out jitter, little enough that a ``clear`` has almost nothing to drop
and audio produced for a turn that is then interrupted mostly never leaves the server.

:class:`TurnLedger` maps marks to text: each mark closes a chunk whose alignment covered text up
to a character offset. A mark echoed before we sent ``clear`` means that audio was played; a
mark still pending at ``clear`` was cleared, whatever Twilio echoes afterwards (protocols.md
§1.4: ``clear`` echoes every pending mark). So the heard text is exact to the chunk.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from voice_pipeline.audio import FRAME_MS, FrameBuffer


@dataclass(slots=True)
class OutFrame:
    turn: int
    audio: bytes


@dataclass(slots=True)
class OutMark:
    turn: int
    name: str


Out = OutFrame | OutMark


class Pacer:
    def __init__(self, *, lead_ms: float = 120.0) -> None:
        self.lead_ms = lead_ms
        self._queue: deque[Out] = deque()
        self._framers: dict[int, FrameBuffer] = {}
        self._playout_end = 0.0  # ms (caller clock estimate) when queued-at-Twilio audio ends

    def push_audio(self, turn: int, audio: bytes, mark: str | None) -> None:
        framer = self._framers.setdefault(turn, FrameBuffer())
        for frame in framer.push(audio):
            self._queue.append(OutFrame(turn, frame))
        if mark is not None:
            self._queue.append(OutMark(turn, mark))

    def end_turn(self, turn: int, mark: str | None = None) -> None:
        """The turn's audio is complete: pad its last partial frame, then the final mark."""
        framer = self._framers.pop(turn, None)
        if framer is not None:
            for frame in framer.flush():
                self._queue.append(OutFrame(turn, frame))
        if mark is not None:
            self._queue.append(OutMark(turn, mark))

    def drop_turn(self, turn: int) -> int:
        """Forget everything of ``turn`` not yet sent (barge-in). Returns frames dropped."""
        self._framers.pop(turn, None)
        dropped = sum(1 for o in self._queue if o.turn == turn and isinstance(o, OutFrame))
        self._queue = deque(o for o in self._queue if o.turn != turn)
        return dropped

    def reset_playout(self, now_ms: float) -> None:
        """After ``clear``: Twilio's buffer is empty."""
        self._playout_end = now_ms

    def due(self, now_ms: float) -> list[Out]:
        """What to send now: frames until the lead is reached; marks as they come up."""
        out: list[Out] = []
        if self._playout_end < now_ms:
            self._playout_end = now_ms
        while self._queue:
            head = self._queue[0]
            if isinstance(head, OutMark):
                out.append(self._queue.popleft())
                continue
            if self._playout_end - now_ms >= self.lead_ms:
                break
            out.append(self._queue.popleft())
            self._playout_end += FRAME_MS
        return out

    def pending_frames(self, turn: int | None = None) -> int:
        return sum(
            1 for o in self._queue if isinstance(o, OutFrame) and (turn is None or o.turn == turn)
        )

    def next_due_ms(self, now_ms: float) -> float | None:
        """When ``due`` will next have something, or None if the queue is empty."""
        if not self._queue:
            return None
        if isinstance(self._queue[0], OutMark):
            return now_ms
        return max(now_ms, self._playout_end - self.lead_ms)

    def buffered_ms(self, now_ms: float) -> float:
        """Audio believed queued at Twilio, not yet played."""
        return max(0.0, self._playout_end - now_ms)


@dataclass
class TurnLedger:
    """What one persona turn said, sent, and was heard saying."""

    turn: int
    text: str = ""  # all text given to TTS for this turn
    sent_chars: int = 0  # characters covered by audio chunks sent so far
    marks: dict[str, int] = field(default_factory=dict)  # mark name → char offset it closes
    heard_chars: int = 0
    cleared: bool = False
    pending: set[str] = field(default_factory=set)

    def add_text(self, text: str) -> None:
        self.text += text

    def chunk(self, mark: str, chars: int) -> None:
        """An audio chunk covering ``chars`` more characters goes out, followed by ``mark``."""
        self.sent_chars = min(len(self.text), self.sent_chars + chars)
        self.marks[mark] = self.sent_chars
        self.pending.add(mark)

    def echoed(self, mark: str) -> bool:
        """Twilio echoed ``mark``. True if it belongs to this turn."""
        if mark not in self.marks:
            return False
        if mark in self.pending and not self.cleared:
            self.heard_chars = max(self.heard_chars, self.marks[mark])
        self.pending.discard(mark)
        return True

    def clear(self) -> None:
        """We sent ``clear``: pending marks were not heard, whatever is echoed next."""
        self.cleared = True

    @property
    def heard_text(self) -> str:
        if not self.cleared and not self.pending and self.sent_chars >= len(self.text.rstrip()):
            return self.text.strip()
        cut = self.text[: self.heard_chars]
        return cut.strip()

    @property
    def fully_played(self) -> bool:
        return not self.pending
