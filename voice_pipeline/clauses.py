"""LLM tokens → clause-sized text for TTS, as soon as each clause is complete.

Speaking starts when the first clause is ready, not when the reply is finished. A clause ends
at a sentence end (``.``, ``!``, ``?``, ``…`` followed by a space) or, once it is long enough to
be worth a synthesis request, at ``,``/``;``/``:``/dash. Decimal points ("3.5"), common
abbreviations ("Dr.", "e.g.") and ellipses inside words do not end a clause. A clause that runs
past ``max_chars`` is cut at its last space, so a run-on reply still streams.
"""

from __future__ import annotations

import re

ABBREVIATIONS = frozenset(
    {
        "mr.",
        "mrs.",
        "ms.",
        "dr.",
        "st.",
        "vs.",
        "e.g.",
        "i.e.",
        "etc.",
        "jr.",
        "sr.",
        "prof.",
        "approx.",
        "no.",
        "a.m.",
        "p.m.",
    }
)
_SENTENCE_END = re.compile(r"[.!?…]+[\"')\]]*\s")
_SOFT_END = re.compile(r"[,;:—–]\s|\s-\s")


class ClauseSplitter:
    def __init__(self, *, min_soft_chars: int = 30, max_chars: int = 220) -> None:
        self.min_soft_chars = min_soft_chars
        self.max_chars = max_chars
        self._buf = ""

    def push(self, text: str) -> list[str]:
        """Add streamed text; return every clause it completed."""
        self._buf += text
        out: list[str] = []
        while True:
            cut = self._find_cut()
            if cut is None:
                break
            clause, self._buf = self._buf[:cut], self._buf[cut:]
            if clause.strip():
                out.append(clause.strip() + " ")
        return out

    def flush(self) -> list[str]:
        """The rest, at the end of the reply."""
        rest, self._buf = self._buf.strip(), ""
        return [rest + " "] if rest else []

    def _find_cut(self) -> int | None:
        buf = self._buf
        for m in _SENTENCE_END.finditer(buf):
            end = m.end()
            word = (
                buf[: m.start() + 1].rsplit(None, 1)[-1].lower()
                if buf[: m.start() + 1].strip()
                else ""
            )
            if word in ABBREVIATIONS:
                continue
            return end
        if len(buf) >= self.min_soft_chars:
            for m in _SOFT_END.finditer(buf, self.min_soft_chars - 5):
                return m.end()
        if len(buf) > self.max_chars:
            space = buf.rfind(" ", 0, self.max_chars)
            return space + 1 if space > 0 else self.max_chars
        return None
