"""Guards the turn-taking machine: replies at the end of the caller's turn, barge-in at once on
caller speech (but not on the persona's own echo), answering words spoken while thinking,
idle prompt then goodbye, max duration, and goodbyes that cannot be interrupted."""

from __future__ import annotations

from voice_pipeline.turns import (
    CallStarted,
    DtmfPressed,
    EndRequested,
    Final,
    HangUp,
    Interim,
    Interrupt,
    PersonaAudioStarted,
    PersonaTurnDone,
    Phase,
    Reply,
    Say,
    SpeechStarted,
    Tick,
    TurnConfig,
    TurnMachine,
    UserUtterance,
    UtteranceEnd,
)


def machine(**kw: object) -> TurnMachine:
    m = TurnMachine(TurnConfig(greeting="Hi, it's Brad!", **kw))  # type: ignore[arg-type]
    assert m.handle(CallStarted(0)) == [Say(1, "Hi, it's Brad!", "greeting")]
    m.handle(PersonaAudioStarted(100, 1))
    m.handle(PersonaTurnDone(1500, 1))
    return m


def test_reply_at_speech_final_with_all_finals_since_last_reply() -> None:
    m = machine()
    assert m.handle(SpeechStarted(2000)) == []
    assert m.handle(Final(2600, "I want to", False)) == []
    assert m.handle(Final(3000, "book a table", True)) == [
        UserUtterance("I want to book a table", 3000),
        Reply(2, "I want to book a table"),
    ]
    assert m.phase is Phase.THINKING


def test_utterance_end_also_ends_the_turn_and_empty_finals_do_nothing() -> None:
    m = machine()
    assert m.handle(Final(2000, "", True)) == []
    m.handle(Final(2500, "hello", False))
    assert m.handle(UtteranceEnd(3500)) == [UserUtterance("hello", 3500), Reply(2, "hello")]


def test_barge_in_on_vad_after_the_echo_guard() -> None:
    m = machine(echo_guard_ms=300)
    m.handle(Final(2000, "tell me a story", True))
    m.handle(PersonaAudioStarted(2400, 2))
    assert m.handle(SpeechStarted(2600)) == []  # within 300 ms of our audio: echo
    assert m.handle(Interim(2650, "uh")) == []  # one word is not enough
    assert m.handle(SpeechStarted(2800)) == [Interrupt(2, "caller speech")]
    assert m.phase is Phase.LISTENING and m.interrupts == 1
    # The interrupted turn finishing later changes nothing; the caller's words get a reply.
    assert m.handle(PersonaTurnDone(2900, 2)) == []
    assert m.handle(Final(3500, "wait, stop", True)) == [
        UserUtterance("wait, stop", 3500),
        Reply(3, "wait, stop"),
    ]


def test_words_barge_in_even_inside_the_echo_guard() -> None:
    m = machine(echo_guard_ms=300, barge_in_words=2)
    m.handle(Final(2000, "hi", True))
    m.handle(PersonaAudioStarted(2400, 2))
    assert m.handle(Interim(2450, "no wait")) == [Interrupt(2, "caller speech")]


def test_speech_while_thinking_is_answered_together() -> None:
    m = machine()
    m.handle(Final(2000, "so my question is", True))
    assert m.phase is Phase.THINKING
    assert m.handle(SpeechStarted(2300)) == [Interrupt(2, "caller speech")]
    assert m.handle(Final(3000, "what time is it", True)) == [
        UserUtterance("what time is it", 3000),
        Reply(3, "what time is it"),
    ]


def test_caller_finishing_while_persona_talks_within_guard_is_answered_after() -> None:
    m = machine(echo_guard_ms=300, barge_in_words=5)
    m.handle(Final(2000, "hi", True))
    m.handle(PersonaAudioStarted(2400, 2))
    m.handle(SpeechStarted(2500))  # guarded
    m.handle(Final(3000, "yes", True))  # one word after the guard: not a barge-in, kept
    assert m.handle(PersonaTurnDone(4000, 2)) == [UserUtterance("yes", 4000), Reply(3, "yes")]


def test_dtmf_is_a_turn_and_interrupts() -> None:
    m = machine()
    assert m.handle(DtmfPressed(2000, "5")) == [
        UserUtterance("(The caller pressed 5 on the keypad.)", 2000),
        Reply(2, "(The caller pressed 5 on the keypad.)"),
    ]


def test_idle_prompt_then_goodbye_then_hang_up() -> None:
    m = machine(idle_timeout_ms=10_000)
    assert m.handle(Tick(11_000)) == []
    assert m.handle(Tick(11_600)) == [Say(2, "Are you still there?", "idle_prompt")]
    m.handle(PersonaAudioStarted(11_700, 2))
    m.handle(PersonaTurnDone(12_500, 2))
    assert m.handle(Final(13_000, "", False)) == []  # silence results are not activity
    actions = m.handle(Tick(22_600))
    assert actions == [Say(3, m.config.idle_goodbye, "goodbye")]
    assert m.handle(SpeechStarted(22_700)) == []  # a goodbye is not interrupted
    m.handle(PersonaAudioStarted(22_800, 3))
    assert m.handle(PersonaTurnDone(25_000, 3)) == [HangUp("idle")]
    assert m.phase is Phase.ENDED and m.handle(Tick(30_000)) == []


def test_caller_activity_resets_the_idle_prompt() -> None:
    m = machine(idle_timeout_ms=10_000)
    m.handle(Tick(11_600))
    m.handle(PersonaTurnDone(12_000, 2))
    m.handle(Final(13_000, "yes I'm here", True))
    assert m.prompted_idle is False


def test_max_duration_interrupts_and_says_goodbye() -> None:
    m = machine(max_duration_ms=60_000)
    m.handle(Final(50_000, "tell me everything", True))
    m.handle(PersonaAudioStarted(50_500, 2))
    actions = m.handle(Tick(60_000))
    assert actions == [Interrupt(2, "max_duration"), Say(3, m.config.time_up_goodbye, "goodbye")]
    assert m.handle(Tick(60_100)) == []
    assert m.handle(PersonaTurnDone(63_000, 3)) == [HangUp("max_duration")]


def test_external_end_without_a_line_hangs_up_now() -> None:
    m = machine()
    assert m.handle(EndRequested(5000, "", "shutdown")) == [HangUp("shutdown")]
