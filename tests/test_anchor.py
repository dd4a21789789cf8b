"""Re-anchoring an answer that skipped a trace sentence (``gsrm.anchor``) and the in-a-row
stop's exemption for answers that walk through the trace; table-driven, no model."""

from __future__ import annotations

import pytest

from gsrm.anchor import MAX_ANCHORS, find_skip, rewriting_steps
from gsrm.backends import DECOMPOSE_IN_A_ROW, TransformersBackend, _AnchorState, stop_cut
from tests.char_tok import CharTok

TRACE = ("Doctor Jones has 9 inpatients, so his rounds take 9 * 20 = 180 minutes. "
         "He has ten appointments, which take 10 * 30 = 300 minutes. "
         "The rounds and appointments take 180 + 300 = 480 minutes total. "
         "An hour is 60 minutes, so they take 480 / 60 = 8 hours. "
         "He has 9 - 8 = 1 hour left to update his records.")
S1 = "Doctor Jones has 9 inpatients, so his rounds take 180 minutes."
S2 = "He has ten appointments, which take 300 minutes."
S3 = "The rounds and appointments take 480 minutes total."
S4 = "An hour is 60 minutes, so they take 8 hours."
S5 = "He has 1 hour left to update his records."


def steps(*answers: str, sub: str = "How long?", tail: str = "") -> str:
    return "".join(f"[Meta-reasoning {i}]: m\n[Sub-problem {i}]: {sub}\n[Answer {i}]: {a}\n"
                   for i, a in enumerate(answers, 1)) + tail


@pytest.mark.parametrize("text, trace, skip", [
    (steps(S1, S2, S4), TRACE, (3, 2, "The rounds and")),              # S3 skipped
    (steps(S2), TRACE, (1, 0, "Doctor Jones has")),                    # the first sentence skipped
    (steps(S1, S2, S3, S4), TRACE, None),                              # in order
    (steps(S1, S2, S2), TRACE, (3, 2, "The rounds and")),              # went back: a repeat
    (steps(S1, S2, S3, S4, S1), TRACE, (5, 4, "He has 9")),            # went back further
    (steps(S1, S2, S3, S4, S5, S4), TRACE, None),                      # back, nothing left
    (steps(S1, "Together they take 480 minutes total.", S4), TRACE,
     (2, 1, "He has ten")),                                            # loose rewrite, S2 skipped
    (steps(S1, S2 + " " + S3, S4), TRACE, None),                       # S3 merged into answer 2
    (steps(S1, S2, "8 hours"), TRACE, None),                           # brief answer: not claimed
    (steps("180 minutes", S2, S4), TRACE, None),                       # not rewriting from step 1
    (steps(S1, S4, tail="[Meta-reasoning 3]: m\n[Answer 3]: He has"), TRACE,
     (2, 1, "He has ten")),                                            # an unfinished line is ignored
    (steps(S1, S2) + "[Meta-reasoning 3]: m\n[Answer 3]: " + S4, TRACE, None),  # no newline yet
    (steps(S1, S4), "Doctor Jones has 9 inpatients. He has 1 hour left.", None),  # S4: no match
    (steps("Mr. Roger bought it at $1500.", "He sold it at $1800.", "So it was 10% off."),
     ("Mr. Roger bought it at 2000 x 75/100 = $1500. He sold it at 1500 x 120/100 = $1800. "
      "So it was 200/2000 = 10% off."), None),                           # "Mr." alone: covered
])
def test_find_skip(text: str, trace: str, skip: tuple[int, int, str] | None) -> None:
    got = find_skip(text, trace)
    if skip is None:
        assert got is None
        return
    assert got is not None and (got.step, got.sentence, got.opening) == skip
    assert text[: got.body_start].endswith(f"[Answer {got.step}]: ")


def test_rewriting_steps_counts_answers_that_walk_through_the_trace() -> None:
    assert rewriting_steps(steps(S1, S2, S3), TRACE) == 3
    assert rewriting_steps(steps(S1, S3, S2), TRACE) == 2  # going back ends the walk
    assert rewriting_steps(steps("180 minutes", S2), TRACE) == 0
    # keeping the result and dropping a long calculation still rewrites the sentence
    bars = "Let B be the bars in a box. Lisa sold 3 1/2 * B bars. Together, they sold " \
           "3 1/2 * B + 4 1/2 * B = 8B = 64 bars. So B = 64 / 8 = 8."
    assert rewriting_steps(steps("Let B be the bars in a box.", "Lisa sold 3 1/2 * B bars.",
                                 "Together, they sold 8B = 64 bars."), bars) == 3


def test_in_a_row_stop_spares_answers_that_walk_through_the_trace() -> None:
    """Four asks of one question stop a decomposition unless its answers rewrite successive
    trace sentences; an invented answer after them brings the stop back."""
    same = "How many minutes does it take?"
    walking = steps(S1, S2, S3, S4, sub=same)
    assert DECOMPOSE_IN_A_ROW == 4
    assert stop_cut(walking, TRACE) == (None, False)
    stuck = steps(S1, "It takes 7 minutes.", "It takes 9 minutes.", "It takes 11 minutes.",
                  sub=same)
    assert stop_cut(stuck, TRACE) == (stuck.index("[Meta-reasoning 4]"), False)
    invented = steps(S1, S2, S3, "It takes 11 minutes.", "It takes 12 minutes.", sub=same)
    assert stop_cut(invented, TRACE) == (invented.index("[Meta-reasoning 5]"), False)


def test_anchor_ids_cuts_the_answer_back_once_per_step() -> None:
    b = TransformersBackend(adapter=None)
    b._tok = CharTok()
    text = steps(S1, S2, S4)
    ids = [ord(c) for c in text]
    state = _AnchorState()
    new = b._anchor_ids(ids, TRACE, state)
    assert new is not None
    assert "".join(map(chr, new)) == text[: text.index(S4)] + "The rounds and"
    assert state.steps == {3}
    assert b._anchor_ids(ids, TRACE, state) is None  # step 3 was re-anchored already
    assert b._anchor_ids(ids, None, _AnchorState()) is None  # chat generation: no trace
    full = _AnchorState(steps=set(range(MAX_ANCHORS)))
    assert b._anchor_ids(ids, TRACE, full) is None  # enough re-anchoring for one row
    fine = [ord(c) for c in steps(S1, S2, S3)]
    assert b._anchor_ids(fine, TRACE, _AnchorState()) is None
