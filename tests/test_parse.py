"""Tests for gsrm.parse: a table of real-world output shapes, round trips, and robustness.

Each table row is (text, steps as (meta, subproblem, answer) tuples, final_answer, warnings);
the comment above a row says which drift or failure it pins down. Warnings are asserted as
exact lists, because callers count and display them.
"""

from __future__ import annotations

import pytest

from gsrm.parse import parse_structure
from gsrm.prompts import render_structure
from gsrm.structure import Step, Structure

NO_FINAL = "no final-answer line"
ABC = "[Meta-reasoning 1]: a\n[Sub-problem 1]: b\n[Answer 1]: c"  # one canonical step

CASES = [
    # The canonical format the prompt asks for: nothing to repair, so no warnings.
    pytest.param(
        "[Meta-reasoning 1]: eggs first\n[Sub-problem 1]: How many eggs?\n[Answer 1]: 9\n"
        "[Meta-reasoning 2]: then money\n[Sub-problem 2]: How many dollars?\n[Answer 2]: 18\n"
        "So the final answer is: 18",
        [("eggs first", "How many eggs?", "9"), ("then money", "How many dollars?", "18")],
        "18",
        [],
        id="canonical",
    ),
    # Models drop the colon after the tag; the tag alone still delimits the part.
    pytest.param(
        "[Meta-reasoning 1] a\n[Sub-problem 1] b\n[Answer 1] c\nSo the final answer is: 1",
        [("a", "b", "c")],
        "1",
        [],
        id="no-colon",
    ),
    # "-" as separator is consumed, but a dash glued to a digit is a minus sign and stays.
    pytest.param(
        "[Meta-reasoning 1] - a\n[Sub-problem 1] - b\n[Answer 1] -3",
        [("a", "b", "-3")],
        None,
        [NO_FINAL],
        id="dash-separator-vs-negative",
    ),
    # Regression: a negative answer after ":" used to lose its sign ("-3" -> "3").
    pytest.param(
        ABC.replace("c", "-3") + "\nSo the final answer is: -3",
        [("a", "b", "-3")],
        "-3",
        [],
        id="negative-answer-after-colon",
    ),
    # Separator "-" followed by a space, then a year: the dash goes, the number stays whole.
    pytest.param(
        "[Meta-reasoning 1]: a\n[Sub-problem 1]: b\n[Answer 1] - 2024",
        [("a", "b", "2024")],
        None,
        [NO_FINAL],
        id="dash-then-number",
    ),
    # Markdown bold around the whole tag, and a bold final-answer line.
    pytest.param(
        "**[Meta-reasoning 1]:** a\n**[Sub-problem 1]:** b\n**[Answer 1]:** c\n"
        "**So the final answer is: 18**",
        [("a", "b", "c")],
        "18",
        [],
        id="bold-around-tag",
    ),
    # Bold inside the brackets, and "Final answer:" wording.
    pytest.param(
        "[**Meta-reasoning 1**]: a\n[**Sub-problem 1**]: b\n[**Answer 1**]: c\nFinal answer: 18",
        [("a", "b", "c")],
        "18",
        [],
        id="bold-inside-brackets",
    ),
    # Nested/extra bold: leftover markers go, bold inside the content is kept intact.
    pytest.param(
        "****[Meta-reasoning 1]:**** a **b**\n***[Sub-problem 1]***: b\n[Answer 1]: **c**",
        [("a **b**", "b", "c")],
        None,
        [NO_FINAL],
        id="nested-bold",
    ),
    # Italic tags: a single "*" must not leak into the content as "*: a".
    pytest.param(
        "*[Meta-reasoning 1]*: a\n*[Sub-problem 1]*: b\n*[Answer 1]*: c",
        [("a", "b", "c")],
        None,
        [NO_FINAL],
        id="italic-tags",
    ),
    # Balanced "__" is not bold here: a Python dunder in an answer survives.
    pytest.param(
        "[Meta-reasoning 1]: a\n[Sub-problem 1]: b\n[Answer 1]: __init__",
        [("a", "b", "__init__")],
        None,
        [NO_FINAL],
        id="dunder-answer",
    ),
    # The released RLKD prompt's spelling ([Meat-reasoning]) and parser's ([Query]) are read.
    pytest.param(
        "[Meat-reasoning 1]: a\n[Query 1]: b\n[Answer 1]: c",
        [("a", "b", "c")],
        None,
        [
            "read tag spelling [meat-reasoning] as [meta-reasoning]",
            "read tag spelling [query] as [sub-problem]",
            NO_FINAL,
        ],
        id="rlkd-prompt-spelling",
    ),
    # The released parser's [sub-think] spelling, lower case; one warning per spelling, sorted.
    pytest.param(
        "[sub-think 1]: a\n[sub-problem 1]: b\n[answer 1]: c\n"
        "[sub-think 2]: d\n[Query 2]: e\n[Answer 2]: f",
        [("a", "b", "c"), ("d", "e", "f")],
        None,
        [
            "read tag spelling [query] as [sub-problem]",
            "read tag spelling [sub-think] as [meta-reasoning]",
            NO_FINAL,
        ],
        id="sub-think-spelling",
    ),
    # Separator variants of the canonical names (spaces, "_", none, upper case) are not "variants".
    pytest.param(
        "[ Meta reasoning  1 ] : a\n[SUB_PROBLEM 1]: b\n[SubProblem 2]: e\n[ANSWER 2]   f",
        [("a", "b", ""), ("", "e", "f")],
        None,
        ["step 1: missing answer", "step 2: missing meta-reasoning", NO_FINAL],
        id="canonical-name-separators",
    ),
    # No numbers at all: steps come from part order alone, reported once.
    pytest.param(
        "[Meta-reasoning]: a\n[Sub-problem]: b\n[Answer]: c\n[Meta-reasoning]: d\n"
        "[Sub-problem]: e\n[Answer]: f",
        [("a", "b", "c"), ("d", "e", "f")],
        None,
        ["6 tag(s) had no step number; steps numbered by position", NO_FINAL],
        id="no-numbers",
    ),
    # A repeated number: the part order still starts step 2; the wrong number is reported.
    pytest.param(
        ABC + "\n[Meta-reasoning 1]: d\n[Sub-problem 1]: e\n[Answer 1]: f",
        [("a", "b", "c"), ("d", "e", "f")],
        None,
        ["step 2 was numbered 1; renumbered by position", NO_FINAL],
        id="repeated-number",
    ),
    # Zero-based numbering is renumbered, not rejected.
    pytest.param(
        "[Meta-reasoning 0]: a\n[Sub-problem 0]: b\n[Answer 0]: c",
        [("a", "b", "c")],
        None,
        ["step 1 was numbered 0; renumbered by position", NO_FINAL],
        id="zero-based",
    ),
    # A skipped number (1, 3) does not invent an empty step 2.
    pytest.param(
        ABC + "\n[Meta-reasoning 3]: d\n[Sub-problem 3]: e\n[Answer 3]: f",
        [("a", "b", "c"), ("d", "e", "f")],
        None,
        ["step 2 was numbered 3; renumbered by position", NO_FINAL],
        id="skipped-number",
    ),
    # Regression: a step "number" longer than int() accepts (4300 digits) used to raise.
    pytest.param(
        "[Meta-reasoning " + "9" * 5000 + "]: a\n[Sub-problem 1]: b\n[Answer 1]: c",
        [("a", "b", "c")],
        None,
        ["1 tag(s) had no step number; steps numbered by position", NO_FINAL],
        id="huge-number",
    ),
    # Parts missing: a number change starts a new step even though the part order did not.
    pytest.param(
        "[Meta-reasoning 1]: a\n[Answer 1]: c\n[Sub-problem 2]: e\n[Answer 2]: f",
        [("a", "", "c"), ("", "e", "f")],
        None,
        ["step 1: missing sub-problem", "step 2: missing meta-reasoning", NO_FINAL],
        id="missing-parts",
    ),
    # Documented rule: a part at or before one already filled starts a new step, even with the
    # same number, so swapped parts give two half steps (and say so) rather than a guess.
    pytest.param(
        "[Sub-problem 1]: b\n[Meta-reasoning 1]: a\n[Answer 1]: c",
        [("", "b", ""), ("a", "", "c")],
        None,
        [
            "step 2 was numbered 1; renumbered by position",
            "step 1: missing meta-reasoning, answer",
            "step 2: missing sub-problem",
            NO_FINAL,
        ],
        id="swapped-parts",
    ),
    # Tags with no content at all: an empty step, every part reported missing.
    pytest.param(
        "[Meta-reasoning 1]:\n[Sub-problem 1]:\n[Answer 1]:",
        [("", "", "")],
        None,
        ["step 1: missing meta-reasoning, sub-problem, answer", NO_FINAL],
        id="empty-tags",
    ),
    # Windows line endings: no "\r" may reach the parts; raw keeps the original text.
    pytest.param(
        "[Meta-reasoning 1]: a\r\nline 2\r\n[Sub-problem 1]: b\r\n[Answer 1]: c\r\n"
        "So the final answer is: 18\r\n",
        [("a\nline 2", "b", "c")],
        "18",
        [],
        id="crlf",
    ),
    # Old Mac line endings ("\r" only) behave like "\n".
    pytest.param(
        "[Meta-reasoning 1]: a\r[Sub-problem 1]: b\r[Answer 1]: c\rSo the final answer is: 1",
        [("a", "b", "c")],
        "1",
        [],
        id="cr-only",
    ),
    # Everything on one line: bracketed tags are found anywhere, the final answer mid-line too.
    pytest.param(
        "[Meta-reasoning 1]: a [Sub-problem 1]: b [Answer 1]: c [Meta-reasoning 2]: d "
        "[Sub-problem 2]: e [Answer 2]: f So the final answer is: 18",
        [("a", "b", "c"), ("d", "e", "f")],
        "18",
        [],
        id="inline-one-line",
    ),
    # Inline with bold and dashes.
    pytest.param(
        "**[Meta-reasoning 1]:** a **[Sub-problem 1]** - b **[Answer 1]:** c",
        [("a", "b", "c")],
        None,
        [NO_FINAL],
        id="inline-bold-dash",
    ),
    # A mid-line reference to an earlier tag is text, not a new step.
    pytest.param(
        "[Meta-reasoning 2]: Using [Answer 1], we need x\n[Sub-problem 2]: b\n[Answer 2]: c",
        [("Using [Answer 1], we need x", "b", "c")],
        None,
        ["step 1 was numbered 2; renumbered by position", NO_FINAL],
        id="mid-line-reference",
    ),
    # Consequence of the reference rule: inline tags with no separator at all are not split.
    pytest.param(
        "[Meta-reasoning 1] a [Sub-problem 1] b [Answer 1] c",
        [("a [Sub-problem 1] b [Answer 1] c", "", "")],
        None,
        ["step 1: missing sub-problem, answer", NO_FINAL],
        id="inline-without-separators",
    ),
    # Bracket-less tags with numbers at line start, in a markdown list with bold.
    pytest.param(
        "- **Meta-reasoning 1:** a\n- **Sub-problem 1:** b\n- **Answer 1:** c",
        [("a", "b", "c")],
        None,
        [NO_FINAL],
        id="bracketless-markdown-list",
    ),
    # Markdown headings holding only the tag; the content is on the next lines.
    pytest.param(
        "### Meta-reasoning 1\nfirst\nsecond\n### Sub-problem 1\nb\n### Answer 1\nc\n",
        [("first\nsecond", "b", "c")],
        None,
        [NO_FINAL],
        id="heading-tags",
    ),
    # Numbered list and blockquote prefixes before bracketed tags do not leak into parts.
    pytest.param(
        "1. [Meta-reasoning 1]: a\n2. [Sub-problem 1]: b\n> [Answer 1]: c",
        [("a", "b", "c")],
        None,
        [NO_FINAL],
        id="list-and-quote-prefixes",
    ),
    # Documented: bracket-less tags count only at line start, so inline ones stay text.
    pytest.param(
        "Meta-reasoning 1: a Sub-problem 1: b Answer 1: c",
        [("a Sub-problem 1: b Answer 1: c", "", "")],
        None,
        ["step 1: missing sub-problem, answer", NO_FINAL],
        id="bracketless-inline-is-text",
    ),
    # Documented: "Answer:" without a number is prose; after the last step it is the final answer.
    pytest.param(
        "Answer: 5 is my guess.\nMeta-reasoning 1: a\nSub-problem 1: b\nAnswer: c",
        [("a", "b", "")],
        "c",
        ["ignored 22 characters before the first tag", "step 1: missing answer"],
        id="bare-answer-is-final",
    ),
    # A lost closing bracket (and a lost opening one) is repaired and reported.
    pytest.param(
        "[Meta-reasoning 1: a\nSub-problem 1]: b\n[Answer 1]: c",
        [("a", "b", "c")],
        None,
        ["2 tag(s) had a missing bracket", NO_FINAL],
        id="unbalanced-brackets",
    ),
    # "[Answer: 5]" has no number, so it is not repaired into a tag.
    pytest.param("[Answer: 5]", [], None, ["no step tags found"], id="bracketed-prose-not-a-tag"),
    # Chatty preamble is skipped and counted; a BOM or bold alone before the tag is not.
    pytest.param(
        "Sure! Here is the decomposition:\n\n" + ABC,
        [("a", "b", "c")],
        None,
        ["ignored 32 characters before the first tag", NO_FINAL],
        id="preamble",
    ),
    pytest.param("\ufeff" + ABC, [("a", "b", "c")], None, [NO_FINAL], id="bom"),
    # Markdown rules between steps and after the last one are layout, not content.
    pytest.param(
        ABC + "\n\n---\n\n[Meta-reasoning 2]: d\n[Sub-problem 2]: e\n[Answer 2]: f\n---\n"
        "So the final answer is: f",
        [("a", "b", "c"), ("d", "e", "f")],
        "f",
        [],
        id="horizontal-rules",
    ),
    # Multi-line parts keep their inner newlines; leading/trailing blank lines go.
    pytest.param(
        "[Meta-reasoning 1]:\nfirst line\nsecond line\n[Sub-problem 1]:\nb\n\n[Answer 1]:\n9\n",
        [("first line\nsecond line", "b", "9")],
        None,
        [NO_FINAL],
        id="multiline-parts",
    ),
    # Full-width colon and non-Latin text.
    pytest.param(
        "[Meta-reasoning 1]：先算鸡蛋\n[Sub-problem 1]：多少个？\n[Answer 1]：9\n最终答案",
        [("先算鸡蛋", "多少个？", "9\n最终答案")],
        None,
        [NO_FINAL],
        id="unicode-fullwidth-colon",
    ),
    # "\boxed{}" with nested braces is unwrapped; the answer text keeps its box.
    pytest.param(
        "[Meta-reasoning 1]: a\n[Sub-problem 1]: b\n[Answer 1]: \\boxed{\\frac{1}{\\sqrt{2}}}",
        [("a", "b", "\\boxed{\\frac{1}{\\sqrt{2}}}")],
        "\\frac{1}{\\sqrt{2}}",
        [],
        id="boxed-nested-braces",
    ),
    # "The final answer is $18$." — dollars and the sentence's period are not the answer.
    pytest.param(
        ABC + "\nThe final answer is $18$.", [("a", "b", "c")], "18", [], id="final-latex-dollars"
    ),
    # GSM8K-style "#### 42" agreeing with the final line: no conflict to report.
    pytest.param(
        ABC + "\nSo the final answer is: 42\n#### 42",
        [("a", "b", "c")],
        "42",
        [],
        id="final-and-hashes-agree",
    ),
    # Two different final answers: the last wins, and the conflict is reported.
    pytest.param(
        ABC + "\nSo the final answer is: 1\nSo the final answer is: 2",
        [("a", "b", "c")],
        "2",
        ["2 different final answers; used the last"],
        id="final-conflict",
    ),
    # "Therefore, the final answer is 18." (no colon) and a bold "**Final Answer:** **18**".
    pytest.param(
        ABC + "\nTherefore, the final answer is 18.",
        [("a", "b", "c")],
        "18",
        [],
        id="final-therefore",
    ),
    pytest.param(ABC + "\n**Final Answer:** **18**", [("a", "b", "c")], "18", [], id="final-bold"),
    # "Final answer -3": the dash before a digit is the number's sign.
    pytest.param(ABC + "\nFinal answer -3", [("a", "b", "c")], "-3", [], id="final-negative"),
    # "The answer is 7." on its own line after the last step is the final answer.
    pytest.param(ABC + "\nThe answer is 7.", [("a", "b", "c")], "7", [], id="final-the-answer-is"),
    # "final answer" without "is" or a separator is prose and stays in the last answer.
    pytest.param(
        ABC + "\nthus the final answer needs care",
        [("a", "b", "c\nthus the final answer needs care")],
        None,
        [NO_FINAL],
        id="final-phrase-without-separator",
    ),
    # Regression: a final line right after the last tag was missed; the answer keeps the line.
    pytest.param(
        "[Meta-reasoning 1]: a\n[Sub-problem 1]: b\n[Answer 1]: So the final answer is: 18",
        [("a", "b", "So the final answer is: 18")],
        "18",
        [],
        id="answer-is-final-line",
    ),
    # Regression: an answer made of markup-like symbols (">") swallowed the final line after it.
    pytest.param(
        "[Meta-reasoning 1]: compare\n[Sub-problem 1]: Which sign fits?\n[Answer 1]: >\n"
        "So the final answer is: 18",
        [("compare", "Which sign fits?", ">")],
        "18",
        [],
        id="symbol-answer-before-final",
    ),
    # A lone "$" is money and stays; only a "$...$" pair (LaTeX) is unwrapped.
    pytest.param(
        ABC + "\nSo the final answer is: $18.", [("a", "b", "c")], "$18", [], id="final-currency"
    ),
    # Regression: an empty final line gave no final answer and no warning.
    pytest.param(
        ABC + "\nSo the final answer is:",
        [("a", "b", "c")],
        None,
        ["final-answer line is empty"],
        id="final-empty",
    ),
    # An empty final line followed by a filled one: the filled one is used, silently.
    pytest.param(
        ABC + "\nSo the final answer is:\nAnswer: 18",
        [("a", "b", "c")],
        "18",
        [],
        id="final-empty-then-bare",
    ),
    # Chatter after the final answer is skipped and counted.
    pytest.param(
        ABC + "\nSo the final answer is: 18\nHope this helps!",
        [("a", "b", "c")],
        "18",
        ["ignored 16 characters after the final answer"],
        id="epilogue",
    ),
    # No tags: no steps, but a final answer is still read (the reward then scores 0).
    pytest.param(
        "The final answer is 42.", [], "42", ["no step tags found"], id="no-tags-final-line"
    ),
    pytest.param("blah \\boxed{7}", [], "7", ["no step tags found"], id="no-tags-boxed"),
    # Nothing at all.
    pytest.param("", [], None, ["no step tags found"], id="empty"),
    pytest.param("asdf ]]]] [[[ ** __ ::", [], None, ["no step tags found"], id="garbage"),
]


@pytest.mark.parametrize(("text", "steps", "final", "warnings"), CASES)
def test_parse_table(
    text: str, steps: list[tuple[str, str, str]], final: str | None, warnings: list[str]
) -> None:
    s = parse_structure(text)
    assert [(x.meta, x.subproblem, x.answer) for x in s.steps] == steps
    assert s.final_answer == final
    assert s.warnings == warnings
    assert s.raw == text


def test_docstring_example() -> None:
    # The module docstring's example, kept honest.
    s = parse_structure(
        "[Meta-reasoning 1]: eggs first\n[Sub-problem 1]: How many eggs?\n"
        "[Answer 1]: 9\nSo the final answer is: 18"
    )
    assert (s.n_steps, s.steps[0].answer, s.final_answer, s.warnings) == (1, "9", "18", [])


@pytest.mark.parametrize("value", [None, 42, b"[Answer 1]: 9", ["[Answer 1]: 9"]], ids=repr)
def test_non_text_is_reported_not_raised(value: object) -> None:
    # Callers pass JSON fields through; a wrong type is a warning, not a crash.
    s = parse_structure(value)  # type: ignore[arg-type]
    assert s.steps == [] and s.final_answer is None
    assert s.warnings == [f"expected text, got {type(value).__name__}"]


ROUND_TRIP = [
    # One plain step with a final answer.
    pytest.param(
        Structure(
            steps=[Step(meta="eggs first", subproblem="How many eggs?", answer="9")],
            final_answer="18",
        ),
        id="one-step",
    ),
    # Several steps, no final answer (render writes no final line).
    pytest.param(
        Structure(
            steps=[Step(meta=f"m{i}", subproblem=f"q{i}?", answer=str(i)) for i in range(1, 6)]
        ),
        id="five-steps-no-final",
    ),
    # Content that looks like markup: negative numbers, inner bold, dunders, brackets, LaTeX.
    pytest.param(
        Structure(
            steps=[
                Step(
                    meta="We need **both** counts - start with x",
                    subproblem="What is x [in cm]?",
                    answer="-3",
                ),
                Step(
                    meta="Then the method name",
                    subproblem="Which hook runs first?",
                    answer="__init__",
                ),
                Step(meta="Finally the ratio", subproblem="What is x/y?", answer="\\frac{1}{2}"),
            ],
            final_answer="\\frac{1}{2}",
        ),
        id="markup-like-content",
    ),
    # Multi-line and non-Latin content.
    pytest.param(
        Structure(
            steps=[Step(meta="先算鸡蛋\nthen sell", subproblem="多少个？", answer="9 個")],
            final_answer="18 元",
        ),
        id="unicode-multiline",
    ),
]


@pytest.mark.parametrize("structure", ROUND_TRIP)
def test_render_then_parse_round_trips(structure: Structure) -> None:
    # parse is the inverse of render_structure on the canonical format, with nothing to repair.
    s = parse_structure(render_structure(structure))
    assert s.steps == structure.steps
    assert s.final_answer == structure.final_answer
    assert s.warnings == ([] if structure.final_answer else [NO_FINAL])


_UNIT = "[Meta-reasoning 1]: a\n[Sub-problem 1]: b\n[Answer 1]: c\n"
_BIG = 200_000
NASTY = [
    "",
    " ",
    "\n" * 1000,
    "\r\n\r\n",
    "\x00\x01\x02",
    "\ud800 lone surrogate",
    "\u202e\u200b\ufeff",
    "😀" * 100,
    "e\u0301" * 100,
    "[",
    "]",
    "[[[[",
    "]]]]",
    "[Answer",
    "[Answer 1",
    "[Answer 1:",
    "Answer 1]",
    "[]",
    "[:]",
    "**",
    "****",
    "__",
    "**[**]**",
    "[Meta-reasoning]",
    "[Answer 1]",
    "[Answer 1]:",
    "[Answer 1] -",
    "[Answer 1]: **",
    "[Answer 1]: __",
    "\\boxed{",
    "\\boxed{}}}",
    "\\boxed{\\boxed{\\boxed{1}",
    "So the final answer is:",
    "#### ",
    "Answer:",
    "final answer -",
    "[Answer 1]: 9\fFinal answer\v: 3\u2028x",
    "[Answer 1]:" * 10,
    "[Answer 1]: x\r" * 10,
    "[Meta-reasoning 1" + "9" * 5000 + ": x",
    # 200 KB inputs that made the old regexes backtrack quadratically (minutes to hours):
    " " * _BIG + "x",
    ("." + " " * 1000) * (_BIG // 1001),
    "[" + " " * _BIG + "x",
    "[Answer 1" + " " * _BIG + "x",
    "[Answer 1]: a" + " " * _BIG + "b",
    "a " + "*" * _BIG + " b",
    "[" * _BIG,
    "\\boxed{" * (_BIG // 7),
    "[Answer 1]: x so" + " " * _BIG + "y",
    # 200 KB of real-looking steps, on many lines and on one line (many tags: no O(n^2) passes).
    _UNIT * (_BIG // len(_UNIT)),
    _UNIT.replace("\n", " ") * (_BIG // len(_UNIT)),
]


@pytest.mark.parametrize("text", NASTY, ids=[f"nasty{i}" for i in range(len(NASTY))])
def test_never_raises(text: str) -> None:
    # Model output is untrusted: whatever comes in, a Structure comes out (big ones quickly).
    s = parse_structure(text)
    assert isinstance(s, Structure)
    assert s.raw == text
    assert all(isinstance(w, str) and w for w in s.warnings)
    assert s.final_answer is None or s.final_answer.strip() == s.final_answer != ""


def test_big_input_is_parsed_completely() -> None:
    # 200 KB of steps: every step is found, with the right content, and numbering is reported.
    n = _BIG // len(_UNIT)
    s = parse_structure(_UNIT * n)
    assert s.n_steps == n
    assert all((x.meta, x.subproblem, x.answer) == ("a", "b", "c") for x in s.steps)
    assert len(s.warnings) == n  # steps 2..n "renumbered", plus "no final-answer line"


try:
    from hypothesis import given, settings
    from hypothesis import strategies as st
except ImportError:  # optional: the rest of this file must run without it

    def test_hypothesis_never_raises() -> None:
        pytest.importorskip("hypothesis")

else:
    _TAGS = [
        "[Meta-reasoning 1]:",
        "[Meat-reasoning 2]",
        "[sub-think]",
        "[Sub-problem 1]",
        "[Query 3] -",
        "[Answer 1]:",
        "**[Answer 2]:**",
        "Answer 1:",
        "\nAnswer 2: ",
        "So the final answer is:",
        "#### ",
        "\\boxed{",
        "}",
        "[",
        "]",
        "**",
        "__",
        "\r\n",
        "\n",
        " - ",
        "-3",
        ":",
    ]

    @settings(max_examples=300, deadline=None, database=None)
    @given(st.lists(st.one_of(st.text(max_size=20), st.sampled_from(_TAGS)), max_size=30))
    def test_hypothesis_never_raises(pieces: list[str]) -> None:
        # Random text mixed with tag fragments: parsing never raises and parts are trimmed.
        text = "".join(pieces)
        s = parse_structure(text)
        assert s.raw == text
        for step in s.steps:
            for part in (step.meta, step.subproblem, step.answer):
                assert part == part.strip() and "\r" not in part

    # any letters, digits, punctuation, symbols and spaces inside; a letter or digit at each end
    # (a part that is only markup, like "**", is deliberately read as empty)
    _PART = (
        st.text(
            alphabet=st.characters(categories=["L", "N", "P", "S", "Zs"]), min_size=2, max_size=30
        )
        .map(str.strip)
        .filter(lambda x: len(x) > 1 and x[0].isalnum() and x[-1].isalnum())
    )

    @settings(max_examples=200, deadline=None, database=None)
    @given(
        st.lists(st.tuples(_PART, _PART, _PART), min_size=1, max_size=6),
        st.one_of(st.none(), _PART),
    )
    def test_hypothesis_round_trip(parts: list[tuple[str, str, str]], final: str | None) -> None:
        # Any structure of such parts survives render -> parse unchanged and warning-free.
        structure = Structure(
            steps=[Step(meta=m, subproblem=q, answer=a) for m, q, a in parts], final_answer=final
        )
        s = parse_structure(render_structure(structure))
        assert s.steps == structure.steps
        assert s.final_answer == final
        assert s.warnings == ([] if final else [NO_FINAL])
