"""Trace units (gsrm.text): where units may start, and the span contract they support."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gsrm.text import protected_spans, spans_from_starts, units


def _texts(text: str) -> list[str]:
    return [u.text for u in units(text)]


@pytest.mark.parametrize(("text", "expected"), [
    # sentence ends followed by a capital start units
    ("Add 2 and 3. So we get 5.", ["Add 2 and 3.", "So we get 5."]),
    # decimals and abbreviations do not end a sentence
    ("Pi is 3.14 approx. e.g. Dr. Smith said so.", ["Pi is 3.14 approx. e.g. Dr. Smith said so."]),
    # a lower-case word after a full stop continues the sentence (an abbreviation we missed)
    ("It costs 5 dollars vs. ten before.", ["It costs 5 dollars vs. ten before."]),
    # a list number at a line start is not a sentence end
    ("Plan:\n1. Find x.\n2. Check it.", ["Plan:", "1. Find x.", "2. Check it."]),
    # display math stays whole, even with full stops and line breaks inside
    ("We get $$x = 1. Y = 2.$$ Then stop.", ["We get $$x = 1. Y = 2.$$", "Then stop."]),
    ("So \\[ a. B \\] holds. Next.", ["So \\[ a. B \\] holds.", "Next."]),
    # inline LaTeX stays whole; dollar amounts are prose
    ("Let $x. Y^2$ be big. It costs $5. Then $6.", ["Let $x. Y^2$ be big.", "It costs $5.",
                                                    "Then $6."]),
    # a code block is one unit
    ("Code:\n```\nx = 1.\nY = 2\n```\nDone.", ["Code:", "```\nx = 1.\nY = 2\n```", "Done."]),
    # semicolons cut clause-level pieces (BIG-Bench Dyck steps)
    ("( ; stack: ( ( ; stack: ( (", ["( ;", "stack: ( ( ;", "stack: ( ("]),
    # run-on joins: a capitalised word after a word with no capitals
    ("He has 5 apples She has 3", ["He has 5 apples", "She has 3"]),
    # ... and after a math span
    ("So $x = 2$ Then we stop", ["So $x = 2$", "Then we stop"]),
    # paragraphs and "Wait"
    ("Try 3.\n\nWait, that fails. Alternatively, try 4.",
     ["Try 3.", "Wait, that fails.", "Alternatively, try 4."]),
])
def test_units(text: str, expected: list[str]) -> None:
    assert _texts(text) == expected


def test_units_keep_offsets() -> None:
    text = "  First.\n\nSecond one. Third "
    for u in units(text):
        assert text[u.start:u.end] == u.text and u.text == u.text.strip()


def test_dollar_amounts_are_not_math() -> None:
    assert protected_spans("Costs $5 and $6, total $11.") == []


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.sampled_from(list("ab A.?!;$\\[]`\n 12=xSW,")), max_size=300),
       st.lists(st.integers(min_value=-5, max_value=320), max_size=12))
def test_span_contract_for_any_text(text: str, starts: list[int]) -> None:
    """Spans are in order, do not overlap, and cover every non-space character; units too."""
    for spans in (spans_from_starts(text, starts),
                  spans_from_starts(text, [u.start for u in units(text)])):
        covered = set()
        prev_end = 0
        for a, b in spans:
            assert prev_end <= a < b <= len(text)
            assert not text[a].isspace() and not text[b - 1].isspace()
            covered.update(range(a, b))
            prev_end = b
        assert {i for i, c in enumerate(text) if not c.isspace()} <= covered
        assert bool(spans) == bool(text.strip())
