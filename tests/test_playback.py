"""Guards outbound pacing and the heard-text ledger: whole 20 ms frames, a small lead over
real time, marks in order, a dropped turn leaves nothing behind, and the heard text is what
marks echoed before the clear prove was played."""

from __future__ import annotations

from voice_pipeline.playback import OutFrame, OutMark, Pacer, TurnLedger


def test_pacer_keeps_a_small_lead_and_whole_frames() -> None:
    p = Pacer(lead_ms=100)
    p.push_audio(1, b"\x01" * 1000, "m1")  # 6 frames + 40 bytes carried over
    p.push_audio(1, b"\x02" * 500, "m2")
    p.end_turn(1, "end")
    out = p.due(0)
    frames = [o for o in out if isinstance(o, OutFrame)]
    assert len(frames) == 5 and all(len(f.audio) == 160 for f in frames)  # 100 ms lead
    assert p.buffered_ms(0) == 100
    assert p.due(0) == []
    later = p.due(60)  # 60 ms played: 3 more frames; m1 goes right behind frame 6
    assert [type(o).__name__ for o in later] == ["OutFrame", "OutMark", "OutFrame", "OutFrame"]
    rest = p.due(10_000)
    names = [o.name for o in rest if isinstance(o, OutMark)]
    assert names == ["m2", "end"]
    total = 5 + 3 + sum(isinstance(o, OutFrame) for o in rest)
    assert total == 10  # 1500 bytes → 9 full frames + 1 padded
    last = [o for o in rest if isinstance(o, OutFrame)][-1]
    assert last.audio.endswith(b"\xff" * 100)  # the tail padded with μ-law silence


def test_dropping_a_turn_removes_only_its_frames() -> None:
    p = Pacer(lead_ms=40)
    p.push_audio(1, b"\x01" * 1600, "a")
    p.push_audio(2, b"\x02" * 320, "b")
    p.due(0)
    assert p.drop_turn(1) == 8
    out = p.due(1000)
    assert {o.turn for o in out} == {2}
    assert p.next_due_ms(1000) is None


def test_ledger_heard_text_stops_at_the_last_played_mark() -> None:
    led = TurnLedger(3)
    led.add_text("Hello there! ")
    led.chunk("t3:0", 13)
    led.add_text("How was the gym today? ")
    led.chunk("t3:1", 10)
    led.chunk("t3:2", 13)
    assert led.echoed("t3:0") and led.heard_text == "Hello there!"
    led.clear()  # barge-in before t3:1 came back
    assert led.echoed("t3:1") and led.echoed("t3:2")  # Twilio echoes cleared marks
    assert led.heard_text == "Hello there!"
    assert not led.echoed("t9:0")


def test_ledger_full_turn_when_every_mark_played() -> None:
    led = TurnLedger(1)
    led.add_text("Short one. ")
    led.chunk("t1:0", 11)
    assert not led.fully_played
    led.echoed("t1:0")
    assert led.fully_played and led.heard_text == "Short one."
