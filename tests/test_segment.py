"""The step segmenter (gsrm.segment): the span contract, the shipped model, rule baselines."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gsrm.segment import (
    FEATURES,
    SEGMENTER_DIR,
    CueSegmenter,
    UnitSegmenter,
    get_segmenter,
    unit_features,
)
from gsrm.text import units

SHIPPED = (SEGMENTER_DIR / "model.safetensors").is_file()
needs_model = pytest.mark.skipif(not SHIPPED, reason="no shipped segmenter in gsrm/adapters/")

LONG_BRANCHING = (
    "Okay, so I need to find the number of ways to pick 2 balls from 5. "
    "First, let me recall the formula: C(n, k) = n! / (k! (n - k)!). "
    "So C(5, 2) = 5! / (2! 3!) = 120 / (2 * 6) = 10.\n\n"
    "Wait, let me double-check that by listing. The pairs with ball 1 are 12, 13, 14, 15; "
    "with ball 2 they are 23, 24, 25; then 34, 35 and 45. That is 4 + 3 + 2 + 1 = 10. Good.\n\n"
    "Alternatively, I could think of ordered picks: 5 * 4 = 20, and each pair is counted "
    "twice, so 20 / 2 = 10. Hmm, all three agree.\n\n"
    "But wait, the problem says the balls are replaced after each draw. "
    "That changes everything: with replacement and order ignored, the count is "
    "C(5 + 2 - 1, 2) = C(6, 2) = 15. Let me verify: 10 pairs of distinct balls plus 5 pairs "
    "of the same ball gives 15.\n\n"
    "So the answer is $\\boxed{15}$.\n\n"
    "```python\nfrom math import comb\nprint(comb(6, 2))  # 15\n```\n"
    "The code confirms it: $$\\binom{6}{2} = 15.$$"
)


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=st.sampled_from(list("ab A.?!;$\\[]`\n 12=xSW,")), max_size=400))
@pytest.mark.parametrize("segmenter", [UnitSegmenter(), CueSegmenter()])
def test_rule_segmenters_keep_the_span_contract(segmenter, text: str) -> None:
    (spans,) = segmenter.segment_many([text])
    _check_contract(text, spans)


def _check_contract(text: str, spans: list[tuple[int, int]]) -> None:
    prev = 0
    covered: set[int] = set()
    for a, b in spans:
        assert prev <= a < b <= len(text)
        covered.update(range(a, b))
        prev = b
    assert {i for i, c in enumerate(text) if not c.isspace()} <= covered
    assert (len(spans) >= 1) == bool(text.strip())  # non-empty text: at least one step


def test_features_match_their_names() -> None:
    text = "Let me add.\n\nWait; so 2 = 2?"
    rows = unit_features(text, units(text))
    assert all(len(r) == len(FEATURES) for r in rows)
    named = [dict(zip(FEATURES, r, strict=True)) for r in rows]
    # why: the network reads these by position; a renamed or reordered feature must fail here
    assert named[0]["first"] == 1.0 and named[0]["plan"] == 1.0
    assert named[1]["paragraph"] == 1.0 and named[1]["reflect"] == 1.0
    assert named[2]["cut_semicolon"] == 1.0 and named[2]["equals"] == 1.0
    assert named[2]["question"] == 1.0


@needs_model
@settings(max_examples=40, deadline=None)
@given(st.text(alphabet=st.sampled_from(list("ab A.?!;$\\[]`\n 12=xSW,")), max_size=400))
def test_trained_segmenter_keeps_the_span_contract(text: str) -> None:
    (spans,) = _trained().segment_many([text])
    _check_contract(text, spans)


_SEG = None


def _trained():
    global _SEG
    if _SEG is None:
        _SEG = get_segmenter("trained")
    return _SEG


@needs_model
@pytest.mark.parametrize(("text", "must_start"), [
    # a check opened by "Wait," after a paragraph, and a change of approach, are new steps
    (LONG_BRANCHING, ["Wait, let me double-check", "Alternatively, I could",
                      "But wait, the problem says"]),
    # GSM8K lines without their line breaks: each line a step
    (("Natalia sold 48/2 = 24 clips in May. Natalia sold 48+24 = 72 clips altogether in April "
      "and May."), ["Natalia sold 48+24"]),
])
def test_trained_segmenter_finds_moves(text: str, must_start: list[str]) -> None:
    (spans,) = _trained().segment_many([text])
    _check_contract(text, spans)
    starts = {a for a, _ in spans}
    for phrase in must_start:
        assert text.index(phrase) in starts, (phrase, [text[a:b][:40] for a, b in spans])


@needs_model
def test_long_trace_gets_steps_of_the_human_order() -> None:
    # why: the single-pass model wrote 2 steps where humans mark ~18; a move-level
    # segmentation of this 6-paragraph trace has several steps but not one per unit
    (spans,) = _trained().segment_many([LONG_BRANCHING])
    n_units = len(units(LONG_BRANCHING))
    assert 5 <= len(spans) < n_units


@needs_model
def test_batch_gives_the_same_spans_as_alone() -> None:
    texts = [LONG_BRANCHING, "Add 2. Then add 3. So 5.", "x"]
    seg = _trained()
    assert seg.segment_many(texts) == [seg.segment_many([t])[0] for t in texts]


def test_unknown_segmenter_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown segmenter"):
        get_segmenter("magic")
