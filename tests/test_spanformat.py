"""The describer's span formats (``gsrm.spanformat``): render, parse, repair, prompts, and
which format an adapter declares; and that the describer follows its backend's format."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import pytest

from gsrm.backends import Backend, Generation
from gsrm.backends.safeguards import cut_at_stop
from gsrm.describe import describe_many, first_step, repair_prefix
from gsrm.prompts import SYSTEM_PROMPT
from gsrm.spanformat import (
    PREVIOUS_CHARS,
    PREVIOUS_HEADING,
    SPAN_FORMATS,
    get_span_format,
    previous_tail,
    span_format_of,
)

PARTS = ("Find the clips.", "How many clips?", "24 clips")


@pytest.mark.parametrize("name", sorted(SPAN_FORMATS))
def test_a_rendered_step_parses_back_to_its_parts(name: str) -> None:
    fmt = get_span_format(name)
    step = fmt.parse(fmt.render(*PARTS))
    # a format without a plan line derives the plan from the question, one fixed verb
    want = ("Find how many clips.", *PARTS[1:]) if fmt.derives_meta else PARTS
    assert step is not None and (step.meta, step.subproblem, step.answer) == want


@pytest.mark.parametrize(("text", "want", "complete"), [
    # a second step (a loop) after the first: only the first is kept
    ("Plan: m\nQuestion: q?\nAnswer: 5\nPlan: again\nQuestion: x", ("m", "q?", "5"), True),
    # leading blank lines and a part over two lines
    ("\nPlan: m\nQuestion: q\nstill q?\nAnswer: 5", ("m", "q\nstill q?", "5"), True),
    # ended after the plan line
    ("Plan: Find $x$", ("Find $x$", "", ""), False),
    # a header word inside a line is not a header
    ("Plan: the Answer: is later\nQuestion: q?\nAnswer: 5", ("the Answer: is later", "q?", "5"),
     True),
    # no plan line at all
    ("I cannot do that.", ("", "", ""), False),
])
def test_pqa_first_step(text: str, want: tuple[str, str, str], complete: bool) -> None:
    step, warns = first_step(text, get_span_format("pqa"))
    assert (step.meta, step.subproblem, step.answer) == want
    assert step.is_complete is complete and (warns == []) is complete


@pytest.mark.parametrize(("text", "want"), [
    ("Plan: Find $x$", "Plan: Find $x$\nQuestion:"),
    ("Plan: m\nQuestion: q?\n", "Plan: m\nQuestion: q?\nAnswer:"),
    ("Plan: m\nQuestion:", None),  # a header with no words: a header cannot fix that
    ("Plan: m\nQuestion: q?\nAnswer: 5", None),
    ("I cannot do that.", None),
])
def test_pqa_repair_prefix(text: str, want: str | None) -> None:
    assert repair_prefix(text, get_span_format("pqa")) == want


@pytest.mark.parametrize(("text", "want", "complete"), [
    ("Question: How old is Mark?\nAnswer: 12", ("Find how old Mark is.", "How old is Mark?", "12"),
     True),
    # a question no rule turns: the plan is the question itself
    ("Question: Why is the sky blue?\nAnswer: scattering",
     ("Why is the sky blue?", "Why is the sky blue?", "scattering"), True),
    # an imperative is already a plan
    ("Question: Simplify the fraction.\nAnswer: 1/2",
     ("Simplify the fraction.", "Simplify the fraction.", "1/2"), True),
    # a second step (a loop) after the first: only the first is kept
    ("Question: q?\nAnswer: 5\nQuestion: again\nAnswer: 6", ("q?", "q?", "5"), True),
    # ended after the question line: the plan is there, the answer is not
    ("Question: Find $x$", ("Find $x$.", "Find $x$", ""), False),
    # a plan line the format does not have is not read as a part
    ("Plan: m\nQuestion: q?\nAnswer: 5", ("q?", "q?", "5"), True),
    # no question line: no step, and no plan made up
    ("Answer: 5", ("", "", ""), False),
])
def test_qa_first_step_derives_the_plan(text: str, want: tuple[str, str, str],
                                        complete: bool) -> None:
    step, warns = first_step(text, get_span_format("qa"))
    assert (step.meta, step.subproblem, step.answer) == want
    assert step.is_complete is complete and (warns == []) is complete


@pytest.mark.parametrize(("text", "cut", "want"), [
    ("Question: q?", False, "Question: q?\nAnswer:"),
    ("Question: q?\n", False, "Question: q?\nAnswer:"),
    ("Question:", False, None),  # no question: a header cannot fix that
    ("Question: q?\nAnswer:", False, None),  # an empty answer the model ended on
    ("Question: q?\nAnswer: 5", False, None),
    ("Question: q?\nAns", True, "Question: q?\nAnswer:"),  # the budget cut the header
    ("Question: q?\nAnswer:", True, "Question: q?\nAnswer:"),
    ("I cannot do that.", False, None),
])
def test_qa_repair_prefix(text: str, cut: bool, want: str | None) -> None:
    assert repair_prefix(text, get_span_format("qa"), cut=cut) == want


def test_qa_is_pqa_without_the_plan_line() -> None:
    qa, pqa = get_span_format("qa"), get_span_format("pqa")
    assert qa.render(*PARTS) == "Question: How many clips?\nAnswer: 24 clips"
    assert pqa.render(*PARTS).split("\n", 1)[1] == qa.render(*PARTS)
    q_sys, p_sys = (f.messages("P?", "S.")[0]["content"] for f in (qa, pqa))
    assert "Plan:" not in q_sys and q_sys.splitlines()[1:] == p_sys.splitlines()[2:]
    assert qa.messages("P?", "S.")[1] == pqa.messages("P?", "S.")[1]
    target = qa.render(*PARTS)
    assert [target[a:b] for a, b in qa.wording_spans(target)] == [" How many clips?"]
    assert [target[a:b] for a, b in qa.answer_spans(target)] == [" 24 clips"]


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"headers": ("A:", "B:"), "marks": ("A:", "B:"), "parts": ("subproblem",)}, "differ"),
    ({"headers": ("A:", "B:"), "marks": ("A:", "B:"), "parts": ("meta", "answer")},
     "a subproblem and an answer"),
])
def test_a_malformed_span_format_is_refused(kwargs: dict, match: str) -> None:
    from gsrm.spanformat import SpanFormat

    with pytest.raises(ValueError, match=match):
        SpanFormat(name="x", stop=(), **kwargs)


@pytest.mark.parametrize(("text", "want"), [
    ("Plan: m\nQuestion: q?\nAnsw", "Plan: m\nQuestion: q?\nAnswer:"),
    ("Plan: m\nQuestion:", "Plan: m\nQuestion:"),
    ("Plan: m\nQuestion: q?\nAnswer: 5", None),
])
def test_pqa_repair_prefix_after_a_budget_cut(text: str, want: str | None) -> None:
    assert repair_prefix(text, get_span_format("pqa"), cut=True) == want


@pytest.mark.parametrize(("name", "want"), [
    ("tags", [" Find the clips.", " How many clips?"]),
    ("pqa", [" Find the clips.", " How many clips?"]),
])
def test_wording_spans_are_the_meta_and_subproblem_texts(name: str, want: list[str]) -> None:
    fmt = get_span_format(name)
    target = fmt.render(*PARTS)
    assert [target[a:b] for a, b in fmt.wording_spans(target)] == want


def test_the_tags_format_is_the_canonical_prompt_and_pqa_a_short_one() -> None:
    tags = get_span_format("tags").messages("What is 2+3?", "2 plus 3 is 5.")
    pqa = get_span_format("pqa").messages("What is 2+3?", "2 plus 3 is 5.")
    assert tags[0]["content"] == SYSTEM_PROMPT and "Reasoning to decompose" in tags[-1]["content"]
    assert [m["role"] for m in pqa] == ["system", "user"]
    assert len(pqa[0]["content"]) < len(SYSTEM_PROMPT) / 2
    assert pqa[1]["content"] == "Problem:\nWhat is 2+3?\n\nStep:\n2 plus 3 is 5."


@pytest.mark.parametrize(("name", "previous", "shown"), [
    ("tags-prev", "Janet has 10 eggs. She eats 4, so 10 - 4 = 6.",
     "Janet has 10 eggs. She eats 4, so 10 - 4 = 6."),
    ("tags-prev", None, None),  # a trace's first span: no section at all
    ("tags-prev", "  \n ", None),
    ("tags", "Janet has 10 eggs.", None),  # a format without ``previous`` ignores it
    ("pqa", "Janet has 10 eggs.", None),
])
def test_a_previous_format_shows_the_previous_span_between_problem_and_span(
        name: str, previous: str | None, shown: str | None) -> None:
    fmt = get_span_format(name)
    user = fmt.messages("What is left?", "So that's 6 more.", 0, previous)[-1]["content"]
    plain = fmt.messages("What is left?", "So that's 6 more.", 0)[-1]["content"]
    if shown is None:
        assert user == plain
    else:
        assert user == (f"Problem:\nWhat is left?\n\n{PREVIOUS_HEADING}\n{shown}\n\n"
                        "Reasoning to decompose:\nSo that's 6 more.")
        # the same system prompt and problem: the prefix all spans of a problem share
        assert fmt.messages("What is left?", "x", 0, previous)[0] == \
            get_span_format("tags").messages("What is left?", "x", 0)[0]


@pytest.mark.parametrize(("text", "limit", "want"), [
    ("one two three four", 10, "… three four"),
    ("  short\n text ", PREVIOUS_CHARS, "short text"),
    ("x" * 30, 10, "… " + "x" * 10),  # no space to cut at: cut mid-word
    ("a " * 200 + "So she has 9 eggs.", 20, "… a So she has 9 eggs."),
])
def test_previous_tail_keeps_the_end_at_a_word_boundary(text: str, limit: int, want: str) -> None:
    got = previous_tail(text, limit)
    assert got == want and len(got) <= limit + 2


@pytest.mark.parametrize(("run_json", "want"), [
    (None, "tags"),  # no run.json: an adapter from elsewhere, or none
    ({"preset": "describer-cpu"}, "tags"),  # trained before the key existed
    ({"span_format": "pqa"}, "pqa"),
    ({"span_format": None}, "tags"),  # a whole-trace decomposer's run
])
def test_an_adapter_declares_its_span_format(tmp_path: Path, run_json: dict | None,
                                             want: str) -> None:
    if run_json is not None:
        (tmp_path / "run.json").write_text(json.dumps(run_json))
    assert span_format_of(tmp_path) == want


def test_an_unknown_span_format_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "run.json").write_text(json.dumps({"span_format": "yaml"}))
    with pytest.raises(KeyError, match="unknown span format 'yaml'; known: \\['pqa', 'qa', "
                       "'tags', 'tags-prev'\\]"):
        span_format_of(tmp_path)
    (tmp_path / "run.json").write_text("{not json")
    with pytest.raises(ValueError, match="run.json: not readable as JSON"):
        span_format_of(tmp_path)


class FormatEchoLM(Backend):
    """Answers a prompt of its span format with ``reply(span, prefill)``; records every call
    as (conversations, stop strings, the assistant prefills)."""

    name = "format-echo"
    describes_spans = True

    def __init__(self) -> None:
        super().__init__(shots=0)
        self.calls: list[tuple[int, tuple[str, ...], tuple[str | None, ...]]] = []
        self.budgets: list[int | None] = []

    def reply(self, span: str, prefill: str | None) -> str:
        raise NotImplementedError

    def generate(self, conversations: Sequence[list[dict[str, str]]],
                 max_new_tokens: int | None = None,
                 stop: Sequence[str] | None = None) -> list[Generation]:
        prefills = tuple(c[-1]["content"] if c[-1]["role"] == "assistant" else None
                         for c in conversations)
        self.calls.append((len(conversations), tuple(stop or ()), prefills))
        self.budgets.append(max_new_tokens)
        out = []
        for conv, prefill in zip(conversations, prefills, strict=True):
            assert conv[0]["content"] == get_span_format(self.span_format).system
            text = self.reply(conv[1]["content"].split("Step:\n", 1)[1], prefill)
            out.append(Generation(text=cut_at_stop(text, stop or ())[0], completion_tokens=3))
        return out


class PqaLM(FormatEchoLM):
    """Answers in pqa lines, stopping after the plan line for spans with "Wait" (so the
    repair has to add the next header)."""

    span_format = "pqa"

    def reply(self, span: str, prefill: str | None) -> str:
        if prefill is None:
            return (f"Plan: Do {span[:8]}" if "Wait" in span else
                    f"Plan: Do {span[:8]}\nQuestion: {span[:8]}?\nAnswer: {len(span)}\n"
                    "Plan: a second step")
        return " more?" if prefill.endswith("Question:") else " 7"


def test_the_describer_follows_its_backends_span_format() -> None:
    lm = PqaLM()
    reasoning = "Add 2 and 3. Wait, check it."
    [s] = describe_many(lm, [("p", reasoning, [(0, 12), (13, 28)])])
    assert (s.steps[0].meta, s.steps[0].subproblem, s.steps[0].answer) == (
        "Do Add 2 an", "Add 2 an?", "12")
    # why: the repair continues in the backend's format (two rounds: question, then answer)
    assert (s.steps[1].subproblem, s.steps[1].answer) == ("more?", "7")
    assert [c[:2] for c in lm.calls] == [(2, ("\nPlan:",)), (1, ("\nPlan:",)), (1, ("\nPlan:",))]
    assert s.warnings == []


class QaLM(FormatEchoLM):
    """Answers in qa lines, stopping after the question line for spans with "Wait" (so the
    repair has to add the answer's header)."""

    span_format = "qa"

    def reply(self, span: str, prefill: str | None) -> str:
        if prefill is None:
            return (f"Question: How many {span[:5]}?" if "Wait" in span else
                    f"Question: How many {span[:5]}?\nAnswer: {len(span)}\n"
                    "Question: a second step")
        return " 7"


def test_a_qa_describer_gets_its_plan_derived_and_its_answer_repaired() -> None:
    lm = QaLM()
    reasoning = "Add 2 and 3. Wait, check it."
    [s] = describe_many(lm, [("p", reasoning, [(0, 12), (13, 28)])])
    assert [(st.meta, st.subproblem, st.answer) for st in s.steps] == [
        ("Find how many Add 2.", "How many Add 2?", "12"),
        ("Find how many Wait,.", "How many Wait,?", "7")]
    # one batch of both spans, then one repair continuation asking for the answer only
    assert [c[:2] for c in lm.calls] == [(2, ("\nQuestion:",)), (1, ("\nQuestion:",))]
    assert lm.calls[-1][2] == ("Question: How many Wait,?\nAnswer:",)
    assert s.warnings == [] and all(st.span for st in s.steps)


@pytest.mark.parametrize(("span_format", "want", "identity_key"), [
    ("tags", "tags", None),  # the format that predates the key: cache keys unchanged
    ("pqa", "pqa", "pqa"),  # describer-pqa-brief's, served behind an OpenAI-compatible server
    ("qa", "qa", "qa"),  # the default describer's
    ("auto", "qa", "qa"),  # the shipped default describer's format, served merged
    (None, "tags", None),  # the default: the canonical format, as for a general model
])
def test_the_openai_backend_is_told_its_span_format(span_format: str | None, want: str,
                                                    identity_key: str | None) -> None:
    """A remote model's adapter cannot be read, so its format is said (``--span-format``), and
    it is part of the cache identity like a local adapter's."""
    from gsrm.backends import get_backend

    kw = {} if span_format is None else {"span_format": span_format}
    b = get_backend("openai", base_url="http://127.0.0.1:9/v1", **kw)
    assert b.span_format == want
    assert b.identity().get("span_format") == identity_key


def test_auto_span_format_follows_the_default_adapter(monkeypatch: pytest.MonkeyPatch) -> None:
    """``auto`` reads the shipped default adapter's run.json, so it moves with DEFAULT_ADAPTER;
    an install without the adapter falls back to the base model's ``tags``."""
    from gsrm.spanformat import default_span_format, resolve_span_format, span_format_of
    from gsrm.weights import default_adapter_dir

    assert default_span_format() == span_format_of(default_adapter_dir()) == "qa"
    monkeypatch.setattr("gsrm.weights.default_adapter_dir", lambda: None)
    assert resolve_span_format("auto") == "tags" and resolve_span_format("pqa") == "pqa"
    with pytest.raises(KeyError, match="nope"):
        resolve_span_format("nope")


def test_an_unknown_span_format_is_refused_by_the_openai_backend_and_the_cli(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from gsrm.backends import get_backend
    from gsrm.cli import main

    with pytest.raises(ValueError, match="unknown span format 'nope'"):
        get_backend("openai", base_url="http://127.0.0.1:9/v1", span_format="nope")
    src = tmp_path / "t.json"
    src.write_text(json.dumps({"problem": "p", "reasoning": "Add 2."}))
    with pytest.raises(SystemExit) as exc:
        main(["decompose", str(src), "--backend", "openai", "--span-format", "nope"])
    assert exc.value.code == 2 and "--span-format" in capsys.readouterr().err


def test_the_cli_passes_span_format_to_the_openai_backend() -> None:
    from gsrm.cli import backend_kwargs, build_parser

    args = build_parser().parse_args(["decompose", "x.json", "--backend", "openai",
                                      "--base-url", "http://127.0.0.1:9/v1",
                                      "--span-format", "pqa"])
    assert backend_kwargs(args)["span_format"] == "pqa"


CLIPS_PROBLEM = ("Natalia sold clips to 48 of her friends in April, and then she sold half as "
                 "many clips in May. How many clips did Natalia sell altogether in April and "
                 "May?")
CLIPS_REASONING = ("Natalia sold 48 / 2 = 24 clips in May. "
                   "Altogether she sold 48 + 24 = 72 clips in April and May.")
CLIPS_SPANS = [(0, 39), (40, len(CLIPS_REASONING))]


@pytest.mark.slow
def test_the_qa_describer_is_prompted_in_its_format() -> None:
    """The real path on the default engine: ``--adapter describer-qa`` declares ``qa``, so the
    backend sends the two-line prompt, reads ``Question: / Answer:`` lines and derives each
    plan from its question; the trained adapter writes complete steps with the trace's
    results."""
    from gsrm.backends import get_backend
    from gsrm.plans import plan_for

    lm = get_backend("openvino", adapter="describer-qa", threads=2)
    assert lm.span_format == "qa" and lm.identity()["span_format"] == "qa"
    [s] = describe_many(lm, [(CLIPS_PROBLEM, CLIPS_REASONING, CLIPS_SPANS)])
    assert [st.span for st in s.steps] == CLIPS_SPANS
    assert all(st.is_complete for st in s.steps), s.warnings
    assert all(st.meta == plan_for(st.subproblem) for st in s.steps)
    assert "24" in s.steps[0].answer and "72" in s.steps[1].answer


@pytest.mark.slow
def test_the_compact_describer_is_prompted_in_its_format() -> None:
    """The real path on the default engine: ``--adapter describer-pqa-brief`` declares ``pqa``, so
    the backend sends the short one-step prompt and reads ``Plan: / Question: / Answer:``
    lines, and the trained adapter writes complete steps with the trace's results."""
    from gsrm.backends import get_backend

    lm = get_backend("openvino", adapter="describer-pqa-brief", threads=2)
    assert lm.span_format == "pqa" and lm.identity()["span_format"] == "pqa"
    [s] = describe_many(lm, [(CLIPS_PROBLEM, CLIPS_REASONING, CLIPS_SPANS)])
    assert [st.span for st in s.steps] == CLIPS_SPANS
    assert all(st.is_complete for st in s.steps), s.warnings
    assert "24" in s.steps[0].answer and "72" in s.steps[1].answer


@pytest.mark.parametrize(("span_format", "given", "want"), [
    ("qa", None, 128),  # two lines, no plan restating a formula: its own, smaller budget
    ("pqa", None, 192),
    ("tags", None, 192),
    ("qa", 64, 64),  # a budget given (benchmarks/decompose.py --describe-max-new-tokens) wins
])
def test_the_describers_budget_follows_its_span_format(span_format: str, given: int | None,
                                                       want: int) -> None:
    """The budget is part of the decomposition's cache key, so a describer's budget changes
    its cached decompositions (``GSRM.decomposer_identity``)."""
    from gsrm.model import GSRM

    lm = QaLM()
    lm.span_format = span_format
    g = GSRM(backend=lm, describe_max_new_tokens=given)
    assert g.describe_max_new_tokens == want == get_span_format(span_format).budget(given)
    assert json.loads(g.decomposer_identity())["describe_max_new_tokens"] == want
    # plans derived from the questions (qa): the derivation rule is part of the identity
    assert ("plan_rule" in json.loads(g.decomposer_identity())) \
        is get_span_format(span_format).derives_meta
    if span_format == "qa":  # the stub writes qa lines: the budget reaches the backend
        [s] = g.decompose_many([("p", "Add 2 and 3.")])
        assert lm.budgets == [want] and s.steps[0].answer == "12"
