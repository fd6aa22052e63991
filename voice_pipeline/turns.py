"""Turn-taking and barge-in, as a pure state machine: events in, actions out, no I/O.

The session feeds it what the providers and Twilio report (caller speech, transcripts, the
persona's audio starting and finishing, time) and carries out what it returns (start a reply,
interrupt, say a fixed line, hang up). Times are ms on the session's clock.

Rules:
- The caller's turn ends at a ``speech_final`` result or an ``UtteranceEnd`` (endpointing is
  configured per persona on the STT side); the reply starts then, with every final transcript
  since the last reply.
- Barge-in: while the persona has a turn in progress, caller speech — a VAD ``SpeechStarted``
  or an interim transcript of at least ``barge_in_words`` words — interrupts it at once. During
  the first ``echo_guard_ms`` of the persona's audio, only words count (VAD onsets there are
  most often the persona's own voice echoed back by the handset).
- Caller speech while the reply is still being generated (no audio yet) also interrupts: the
  caller was not done; their words are kept and answered together.
- Idle: nobody spoke or played audio for ``idle_timeout_ms`` → "are you still there?"; idle as
  long again → goodbye, then hang up. A call at ``max_duration_ms`` says goodbye and hangs up.
  Lines the persona must finish (goodbyes) cannot be interrupted.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field


class Phase(enum.Enum):
    LISTENING = "listening"
    THINKING = "thinking"  # reply requested, no audio yet
    SPEAKING = "speaking"  # persona audio playing
    ENDING = "ending"  # goodbye in progress; hang up when it has played
    ENDED = "ended"


# ------------------------------------------------------------------ events
@dataclass(frozen=True, slots=True)
class CallStarted:
    t: float


@dataclass(frozen=True, slots=True)
class SpeechStarted:
    t: float


@dataclass(frozen=True, slots=True)
class Interim:
    t: float
    text: str


@dataclass(frozen=True, slots=True)
class Final:
    t: float
    text: str
    speech_final: bool
    speech_end: float | None = None  # when the last word ended, on the session clock (ms)


@dataclass(frozen=True, slots=True)
class UtteranceEnd:
    t: float


@dataclass(frozen=True, slots=True)
class DtmfPressed:
    t: float
    digit: str


@dataclass(frozen=True, slots=True)
class PersonaAudioStarted:
    t: float
    turn: int


@dataclass(frozen=True, slots=True)
class PersonaTurnDone:
    """Every frame of the turn was sent and its last mark came back (or it failed silently)."""

    t: float
    turn: int


@dataclass(frozen=True, slots=True)
class Tick:
    t: float


@dataclass(frozen=True, slots=True)
class Notice:
    """Tell the caller ``line`` (e.g. the budget warning): now if listening, else after the
    current persona turn."""

    t: float
    line: str
    kind: str


@dataclass(frozen=True, slots=True)
class EndRequested:
    """Something outside the conversation ends the call (budget, shutdown): say ``line``."""

    t: float
    line: str
    reason: str


Event = (
    CallStarted
    | SpeechStarted
    | Interim
    | Final
    | UtteranceEnd
    | DtmfPressed
    | PersonaAudioStarted
    | PersonaTurnDone
    | Tick
    | EndRequested
    | Notice
)


# ------------------------------------------------------------------ actions
@dataclass(frozen=True, slots=True)
class Reply:
    turn: int
    user_text: str


@dataclass(frozen=True, slots=True)
class Say:
    """Speak a fixed line as ``turn`` (greeting, idle prompt, goodbye)."""

    turn: int
    text: str
    kind: str


@dataclass(frozen=True, slots=True)
class Interrupt:
    turn: int
    reason: str


@dataclass(frozen=True, slots=True)
class UserUtterance:
    """A finished caller utterance, for the transcript."""

    text: str
    t: float


@dataclass(frozen=True, slots=True)
class HangUp:
    reason: str


Action = Reply | Say | Interrupt | UserUtterance | HangUp


@dataclass
class TurnConfig:
    greeting: str | None = None
    barge_in_words: int = 2
    echo_guard_ms: float = 300.0
    idle_timeout_ms: float = 15_000.0
    max_duration_ms: float | None = None
    still_there: str = "Are you still there?"
    idle_goodbye: str = "It seems you've stepped away. I'll let you go for now. Talk soon, bye!"
    time_up_goodbye: str = (
        "We're just about out of time for today. It was great talking, bye for now!"
    )


@dataclass
class TurnMachine:
    config: TurnConfig = field(default_factory=TurnConfig)
    phase: Phase = Phase.LISTENING
    turn: int = 0  # the persona turn in progress or last done
    audio_started_at: float | None = None
    uninterruptible: bool = False
    pending_user: list[str] = field(default_factory=list)  # finals not yet answered
    last_activity: float = 0.0
    prompted_idle: bool = False
    hangup_reason: str = ""
    interrupts: int = 0
    pending_notice: Notice | None = None

    def handle(self, event: Event) -> list[Action]:
        if self.phase is Phase.ENDED:
            return []
        if isinstance(event, CallStarted):
            self.last_activity = event.t
            if self.config.greeting:
                return [self._say(event.t, self.config.greeting, "greeting")]
            return []
        if isinstance(event, Tick):
            return self._tick(event.t)
        if isinstance(event, EndRequested):
            return self._end(event.t, event.line, event.reason)
        if isinstance(event, Notice):
            if self.phase is Phase.LISTENING and not self.pending_user:
                return [self._say(event.t, event.line, event.kind)]
            if self.phase not in (Phase.ENDING, Phase.ENDED):
                self.pending_notice = event
            return []
        if isinstance(event, PersonaAudioStarted):
            if event.turn == self.turn and self.phase in (
                Phase.THINKING,
                Phase.SPEAKING,
                Phase.ENDING,
            ):
                self.audio_started_at = event.t
                if self.phase is Phase.THINKING:
                    self.phase = Phase.SPEAKING
                self.last_activity = event.t
            return []
        if isinstance(event, PersonaTurnDone):
            if event.turn != self.turn:
                return []
            self.last_activity = event.t
            if self.phase is Phase.ENDING:
                self.phase = Phase.ENDED
                return [HangUp(self.hangup_reason)]
            if self.phase in (Phase.THINKING, Phase.SPEAKING):
                self.phase = Phase.LISTENING
                self.audio_started_at = None
                self.uninterruptible = False
                if self.pending_notice is not None:
                    notice, self.pending_notice = self.pending_notice, None
                    return [self._say(event.t, notice.line, notice.kind)]
                if self.pending_user:  # the caller spoke and finished while we talked
                    return self._reply(event.t)
            return []
        # Caller side. Empty finals (Deepgram sends them over silence) are not activity.
        if not (isinstance(event, Final | Interim) and not event.text.strip()):
            self.last_activity = event.t
            self.prompted_idle = False
        if isinstance(event, SpeechStarted):
            return self._maybe_barge_in(event.t, words=0, vad=True)
        if isinstance(event, Interim):
            return self._maybe_barge_in(event.t, words=len(event.text.split()), vad=False)
        if isinstance(event, Final):
            actions: list[Action] = []
            if event.text.strip():
                actions += self._maybe_barge_in(event.t, words=len(event.text.split()), vad=False)
                if self._echo_window(event.t) and self.phase is Phase.SPEAKING:
                    return actions  # the persona's own voice, transcribed
                self.pending_user.append(event.text.strip())
            if event.speech_final and self.pending_user and self.phase is Phase.LISTENING:
                actions += self._reply(event.t)
            return actions
        if isinstance(event, UtteranceEnd):
            if self.pending_user and self.phase is Phase.LISTENING:
                return self._reply(event.t)
            return []
        if isinstance(event, DtmfPressed):
            actions = self._maybe_barge_in(event.t, words=99, vad=False)
            self.pending_user.append(f"(The caller pressed {event.digit} on the keypad.)")
            if self.phase is Phase.LISTENING:
                actions += self._reply(event.t)
            return actions
        return []

    # ------------------------------------------------------------------ helpers
    def _echo_window(self, t: float) -> bool:
        return (
            self.audio_started_at is not None
            and t - self.audio_started_at < self.config.echo_guard_ms
        )

    def _maybe_barge_in(self, t: float, *, words: int, vad: bool) -> list[Action]:
        if self.phase not in (Phase.THINKING, Phase.SPEAKING) or self.uninterruptible:
            return []
        if self.phase is Phase.SPEAKING:
            if vad and self._echo_window(t):
                return []
            if not vad and words < self.config.barge_in_words:
                return []
        elif not vad and words == 0:
            return []
        turn = self.turn
        self.phase = Phase.LISTENING
        self.audio_started_at = None
        self.interrupts += 1
        return [Interrupt(turn, "caller speech" if vad or words else "keypad")]

    def _reply(self, t: float) -> list[Action]:
        text = " ".join(self.pending_user)
        self.pending_user.clear()
        self.turn += 1
        self.phase = Phase.THINKING
        self.audio_started_at = None
        return [UserUtterance(text, t), Reply(self.turn, text)]

    def _say(self, t: float, text: str, kind: str, *, final: bool = False) -> Say:
        self.turn += 1
        self.phase = Phase.ENDING if final else Phase.THINKING
        self.uninterruptible = final
        self.audio_started_at = None
        self.last_activity = t
        return Say(self.turn, text, kind)

    def _end(self, t: float, line: str, reason: str) -> list[Action]:
        if self.phase in (Phase.ENDING, Phase.ENDED):
            return []
        actions: list[Action] = []
        if self.phase in (Phase.THINKING, Phase.SPEAKING):
            actions.append(Interrupt(self.turn, reason))
        self.hangup_reason = reason
        if not line:
            self.phase = Phase.ENDED
            return [*actions, HangUp(reason)]
        return [*actions, self._say(t, line, "goodbye", final=True)]

    def _tick(self, t: float) -> list[Action]:
        limit = self.config.max_duration_ms
        if limit is not None and t >= limit and self.phase not in (Phase.ENDING, Phase.ENDED):
            return self._end(t, self.config.time_up_goodbye, "max_duration")
        if self.phase is not Phase.LISTENING or self.pending_user:
            return []
        if t - self.last_activity < self.config.idle_timeout_ms:
            return []
        if not self.prompted_idle:
            self.prompted_idle = True
            return [self._say(t, self.config.still_there, "idle_prompt")]
        return self._end(t, self.config.idle_goodbye, "idle")
