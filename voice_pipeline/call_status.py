"""The call status machine of seed 004 §7.1, as a pure function.

Signals about one call arrive from three places in any order, some retried: Twilio status
callbacks (``CallStatus`` values, possibly out of order), the voice server (socket connected),
and our own REST outcome. Status only moves forward; a terminal status never regresses, except
a *provisional* failure (we gave up waiting for Twilio's REST answer, so we do not know whether
the call was placed) which Twilio's own callbacks may overrule.
"""

from __future__ import annotations

from typing import Final

ACTIVE_RANK: Final = {"initiating": 0, "calling": 1, "connected": 2, "in_progress": 3}
TERMINAL: Final = frozenset({"completed", "failed", "no_answer", "busy", "canceled"})
STATUSES: Final = frozenset(ACTIVE_RANK) | TERMINAL

# Twilio CallStatus (protocols.md §1.7) → ours.
FROM_TWILIO: Final = {
    "queued": "calling",
    "initiated": "calling",
    "ringing": "calling",
    "in-progress": "in_progress",
    "completed": "completed",
    "busy": "busy",
    "no-answer": "no_answer",
    "failed": "failed",
    "canceled": "canceled",
}


def next_status(current: str, incoming: str, *, provisional: bool = False) -> str | None:
    """The status after ``incoming`` is applied to ``current``, or None if it changes nothing."""
    if incoming not in STATUSES or current not in STATUSES:
        raise ValueError(
            f"unknown call status {incoming if incoming not in STATUSES else current!r}"
        )
    if incoming == current:
        return None
    if current in TERMINAL:
        if provisional and current == "failed":
            return incoming
        return None
    if incoming in TERMINAL:
        return incoming
    return incoming if ACTIVE_RANK[incoming] > ACTIVE_RANK[current] else None


def credits_for(duration_seconds: int) -> int:
    """Credits charged for a call: one per started minute (seed 004 §6.1)."""
    return -(-max(0, duration_seconds) // 60)
