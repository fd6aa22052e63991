"""Guards clause splitting of streamed LLM text: early first clause, no cuts at decimals or
abbreviations, soft cuts only once a clause is long enough, run-ons cut at a space."""

from __future__ import annotations

from voice_pipeline.clauses import ClauseSplitter


def split(text: str, step: int = 3) -> list[str]:
    s = ClauseSplitter()
    out: list[str] = []
    for i in range(0, len(text), step):  # tokens of arbitrary size, as an LLM streams them
        out += s.push(text[i : i + step])
    return out + s.flush()


def test_sentences_come_out_as_soon_as_they_end() -> None:
    s = ClauseSplitter()
    assert s.push("Hey man! Good") == ["Hey man! "]
    assert s.push(" to see") == []
    assert s.push(" you. ") == ["Good to see you. "]
    assert s.flush() == []


def test_decimals_abbreviations_and_soft_breaks() -> None:
    out = split(
        "Dr. Smith says it costs 3.5 dollars, which honestly seems quite fair to me, right? Yes."
    )
    assert out == [
        "Dr. Smith says it costs 3.5 dollars, ",
        "which honestly seems quite fair to me, ",
        "right? ",
        "Yes. ",
    ]
    assert split("Ok, sure.") == ["Ok, sure. "]  # too short to cut at the comma


def test_run_on_text_is_cut_at_a_space_and_nothing_is_lost() -> None:
    text = " ".join(["word"] * 120)
    out = split(text, step=7)
    assert all(len(c) <= 221 for c in out) and len(out) >= 2
    assert " ".join(c.strip() for c in out) == text
