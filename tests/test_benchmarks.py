"""The benchmark scripts parse their arguments and fail clearly without data.

Why: the README quotes figures these scripts print; a script that no longer imports or parses
its documented flags would leave those figures without a way to reproduce them. Running the
benchmarks themselves takes minutes, so only their entry points are checked here, plus the
decomposition breakdown's bookkeeping (a stub LM) and, slow, its run on the default engine.
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from tests.test_describe import CachingEchoLM

# score_rss is left out: it passes its arguments through to ``gsrm score``
SCRIPTS = ["decode", "decompose", "describer_dev", "engines", "load", "openvino_parity",
           "prefix_blocks", "segment", "train_step"]


@pytest.mark.parametrize("name", SCRIPTS)
def test_help_exits_cleanly(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    module = importlib.import_module(f"benchmarks.{name}")
    with pytest.raises(SystemExit) as exc:
        module.main(["--help"])
    assert exc.value.code == 0
    assert "usage:" in capsys.readouterr().out


@pytest.mark.parametrize(("name", "argv"), [
    ("engines", ["--data", "/nonexistent/data", "--engines", "decode"]),
    ("openvino_parity", ["--data", "/nonexistent/data"]),
])
def test_missing_data_exits_2(name: str, argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    module = importlib.import_module(f"benchmarks.{name}")
    assert module.main(argv) == 2
    assert "/nonexistent/data" in capsys.readouterr().err


def test_breakdown_times_warmup_prefill_and_decode_on_the_describers_own_prompts() -> None:
    from benchmarks.decompose import breakdown
    from gsrm.segment import get_segmenter

    lm = CachingEchoLM()  # test_describe's stub LM, prefix warm-up on
    gsrm = SimpleNamespace(two_stage=True, backend=lm, segmenter=get_segmenter("units"),
                           describe_max_new_tokens=192)
    trace = "Add 2 and 3. So we get 5. Wait, check it: 2 + 3 = 5. Yes."
    # a trace, its copy (described once) and a second trace of the same problem
    got = breakdown(gsrm, [("p", trace), ("p", trace), ("p", "One step only")])
    # why: warm-up = one prompt per problem, then prefill and decode of the 5 distinct prompts
    assert [c[:2] for c in lm.calls] == [(1, 1), (5, 1), (5, 192)]
    assert (got["spans"], got["distinct_prompts"]) == (9, 5)
    assert (got["prompt_tokens"], got["completion_tokens"]) == (5 * 30, 5 * 9)
    assert got["decode_includes_prefill"] is True  # no prefix cache behind this backend
    assert got["prefix_tokens_past_block"] is None  # nor a paged one to count blocks of
    assert got["block_cached_tokens"] is None
    assert all(got[k] >= 0 for k in ("segment_s", "warmup_s", "prefill_s", "decode_s"))


class PlanPrefilledLM(CachingEchoLM):
    """The stub LM, also answering a prefilled reply (its last message the assistant's):
    with the rest of the step only, as a describer continuing after its plan line would."""

    def reply_to(self, conv: list[dict[str, str]]) -> str:
        if conv[-1]["role"] == "assistant":
            self.prefilled.append(conv[-1]["content"])
            return " What is it?\n[Answer 1]: 5"
        return super().reply_to(conv)

    def __init__(self) -> None:
        super().__init__()
        self.prefilled: list[str] = []


def test_plan_cost_decodes_again_after_each_replys_own_plan_line() -> None:
    from benchmarks.decompose import breakdown
    from gsrm.segment import get_segmenter

    lm = PlanPrefilledLM()
    gsrm = SimpleNamespace(two_stage=True, backend=lm, segmenter=get_segmenter("units"),
                           describe_max_new_tokens=192)
    got = breakdown(gsrm, [("p", "Add 2 and 3. So we get 5.")], plan_cost=True)
    # warm-up, prefill, decode, then the round with the plan prefilled
    assert [c[:2] for c in lm.calls] == [(1, 1), (2, 1), (2, 192), (2, 192)]
    # each prompt's own plan line, then the sub-problem's tag: the rest is decoded
    assert lm.prefilled == ["[Meta-reasoning 1]: Do Add 2 and 3.\n[Sub-problem 1]:",
                            "[Meta-reasoning 1]: Do So we get 5.\n[Sub-problem 1]:"]
    assert got["completion_tokens_after_plan"] == 2 * lm.tokens
    assert got["decode_after_plan_s"] >= 0
    assert "decode_after_plan_s" not in breakdown(gsrm, [("p", "Add 2 and 3.")])
    lm.span_format = "qa"  # a describer that writes no plan line: nothing to measure
    with pytest.raises(ValueError, match="'qa' describer writes no plan line"):
        breakdown(gsrm, [("p", "Add 2 and 3.")], plan_cost=True)


@pytest.mark.parametrize(("reply", "want"), [
    ("Plan: Find the eggs.\nQuestion: How many?\nAnswer: 72", "Plan: Find the eggs.\nQuestion:"),
    ("[Meta-reasoning 1]: Do it.\n[Sub-problem 1]: What?",
     "[Meta-reasoning 1]: Do it.\n[Sub-problem 1]:"),
    ("  Plan: Lead space.\nQuestion: Q?", "Plan: Lead space.\nQuestion:"),
    ("Plan: a plan with no line after it", "Plan:"),  # nothing follows: decode it all
    ("72", "Plan:"),  # no plan: decode it all
])
def test_plan_prefix(reply: str, want: str) -> None:
    from benchmarks.decompose import plan_prefix

    headers = ("[Meta-reasoning 1]:", "[Sub-problem 1]:", "[Answer 1]:") \
        if reply.startswith("[") else ("Plan:", "Question:", "Answer:")
    assert plan_prefix(reply, headers) == want


def test_plan_cost_needs_the_breakdown(capsys: pytest.CaptureFixture[str]) -> None:
    from benchmarks.decompose import main

    assert main(["--plan-cost"]) == 2
    assert "--breakdown" in capsys.readouterr().err


def test_breakdown_refuses_the_single_pass_decomposer(capsys: pytest.CaptureFixture[str]) -> None:
    from benchmarks.decompose import main

    assert main(["--breakdown", "--decomposer", "single-pass"]) == 2
    assert "two-stage" in capsys.readouterr().err


@pytest.mark.slow
def test_breakdown_on_the_default_engine(capsys: pytest.CaptureFixture[str]) -> None:
    """The real path: the default backend (OpenVINO, the shipped describer) on one trace."""
    from benchmarks.decompose import main

    assert main(["--breakdown", "--limit", "1", "--describe-max-new-tokens", "24",
                 "--batch-size", "4", "--threads", "2"]) == 0
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    got = line["sets"]["repo"]
    assert line["backend"] == "openvino" and line["complete"] is True
    assert got["decode_includes_prefill"] is False
    assert got["spans"] >= 2 and got["prompt_tokens"] > 100 * got["distinct_prompts"]
    assert 0 < got["completion_tokens"] <= 24 * got["distinct_prompts"]
    assert got["prefill_s"] > 0 and got["decode_s"] > 0
    # the trace's span prompts share at least the system prompt and the problem
    assert got["kv_block_tokens"] == 32
    assert 50 * got["distinct_prompts"] < got["shared_prefix_tokens"] < got["prompt_tokens"]
    assert 0 <= got["prefix_tokens_past_block"] < 32 * got["distinct_prompts"]
    # every prompt after the first holds the whole blocks of the shared prefix, at least
    shared_blocks = (got["shared_prefix_tokens"] // got["distinct_prompts"]) // 32 * 32
    assert got["block_cached_tokens"] >= shared_blocks * (got["distinct_prompts"] - 1)


@pytest.mark.parametrize(("pairs", "want"), [
    ([("60", "we get $x=60$.")], (1, 1)),
    ([("15", "the measure of each one is $x$.")], (1, 0)),  # a made-up number
    ([("1,200 eggs", "So 600 * 2 = 1200 eggs.")], (1, 1)),  # thousands comma
    ([("2.5 and 7", "2.5 + 4.5 = 7")], (1, 1)),  # every number must be there
    ([("2.5 and 8", "2.5 + 4.5 = 7")], (1, 0)),
    ([("the angle PAB", "Call it x.")], (0, 0)),  # no number: not counted
    ([("$352", "The total is $352.00.")], (1, 1)),  # trailing decimal zeros: the same number
    ([("2.50 dollars", "it costs 2.5")], (1, 1)),
    ([("100", "it costs 10.0")], (1, 0)),  # only decimal zeros go: 100 is not 10
    ([("10.05", "it costs 10.5")], (1, 0)),
])
def test_answer_grounding(pairs: list[tuple[str, str]], want: tuple[int, int]) -> None:
    from benchmarks.describer_dev import grounding

    assert grounding(pairs) == want


@pytest.mark.parametrize(("answer", "span", "copied"), [
    ("10, and it divides evenly, so there are 10 cartons",
     "60 / 6 = 10, and it divides evenly, so there are 10 cartons.", True),
    ("So the farmer makes $25 in all.", "So the farmer  makes\n$25 in all.", True),  # spacing
    ("10 cartons", "so there are 10 cartons.", False),  # brief: the result itself
    ("So the farmer makes $25", "So the farmer makes $25.", False),  # five words
    ("the farmer makes twenty five dollars", "So the farmer makes $25.", False),  # reworded
])
def test_answer_copies(answer: str, span: str, copied: bool) -> None:
    from benchmarks.describer_dev import copies

    assert copies([(answer, span)]) == int(copied)


@pytest.mark.parametrize(("answer", "question"), [
    ("How many stack entries are in the stack?", True),
    ("the stack is empty?  ", True),  # trailing space
    ("72 eggs", False),
    ("Is it 5? Yes, 5", False),  # a result after the question
    ("", False),  # empty is counted apart
])
def test_answers_as_questions(answer: str, question: bool) -> None:
    from benchmarks.describer_dev import questions

    assert questions([answer]) == int(question)


@pytest.mark.parametrize(("answer", "span", "flaw"), [
    ("72 eggs", "so 72 eggs.", False),
    ("the stack < (", "stack: < ( ;", False),  # no number, no question: not a flaw here
    ("How many items are on the stack?", "stack: < ( ;", True),
    ("1 stack entry", "stack: < ( ;", True),  # a made-up count
    ("", "Right.", True),
    ("so there are 10 cartons in all", "so there are 10 cartons in all.", True),  # a copy
])
def test_answers_flawed(answer: str, span: str, flaw: bool) -> None:
    from benchmarks.describer_dev import flawed

    assert flawed([(answer, span)]) == int(flaw)


@pytest.mark.parametrize(("meta", "subproblem", "restates"), [
    ("Figure out how many eggs are left.", "How many eggs are left?", True),
    ("Work out how much Billy will be paid in total.", "How much will Billy be paid in total?",
     True),
    ("Find the minimum value of $x$", "Find the minimum value of $x$", True),  # verbatim
    ("Count the eggs first, then the cartons.", "How many eggs are left?", False),
    ("Check the last step again.", "What is 3 + 4?", False),
    ("Find how many eggs are left.", "", False),  # nothing to restate
])
def test_plans_restating_their_question(meta: str, subproblem: str, restates: bool) -> None:
    from benchmarks.describer_dev import restates_question

    assert restates_question(meta, subproblem) is restates


def test_from_out_reads_a_written_run_again(tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    """``--from-out`` prints the figures that need no timing from ``--out`` files."""
    from benchmarks.describer_dev import main
    from gsrm.structure import Step, Structure

    reasoning = "So 3 + 4 = 7. Then each one is x, the same as before."
    steps = [Step(meta="Add.", subproblem="What is 3 + 4?", answer="7", span=(0, 13)),
             Step(meta="Find it.", subproblem="", answer="15", span=(14, 34)),
             Step(meta="Name it.", subproblem="What is each one?",
                  answer="each one is x, the same as before", span=(14, 52)),
             Step(meta="Ask.", subproblem="What is left?", answer="What is left?",
                  span=(0, 13)),
             Step(meta="Say.", subproblem="What is it?", answer="", span=(14, 52))]
    row = {"id": "t-1", "problem": "P?", "reasoning": reasoning,
           "structure": Structure(steps=steps).model_dump(mode="json")}
    (tmp_path / "demo.jsonl").write_text(json.dumps(row) + "\n")
    assert main(["--from-out", str(tmp_path), "--tasks", "demo"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["parse_valid"] == 0.0 and out["steps_incomplete"] == 2
    assert (out["numeric_answers"], out["answer_numbers_in_span"]) == (2, 0.5)
    assert out["answers_copied"] == round(1 / 5, 3)
    assert (out["answers_as_questions"], out["answers_empty"]) == (round(1 / 5, 3), 1)
    # "15" not in its span, the copy, the question and the empty one
    assert out["answers_flawed"] == round(4 / 5, 3)
    # no plan here restates its question; the plans' share of the parts' characters
    assert out["plans_restating_question"] == 0.0
    chars = [(len(st.meta), len(st.meta) + len(st.subproblem) + len(st.answer)) for st in steps]
    assert out["plan_chars_share"] == round(sum(m for m, _ in chars) / sum(t for _, t in chars), 3)
    assert main(["--from-out", str(tmp_path), "--tasks", "missing"]) == 2
    assert "missing.jsonl: not found" in capsys.readouterr().err


@pytest.mark.parametrize(("span_format", "plans_null"), [
    (None, False),  # a file written before the format was recorded: figures as measured
    ("pqa", False),  # the describer wrote its plans
    ("qa", True),  # plans derived from the question: not the model's to measure
])
def test_from_out_nulls_plan_figures_of_a_derived_plan(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], span_format: str | None,
        plans_null: bool) -> None:
    from benchmarks.describer_dev import main
    from gsrm.structure import Step, Structure

    steps = [Step(meta="Find what 3 + 4 is.", subproblem="What is 3 + 4?", answer="7",
                  span=(0, 13))]
    row = {"id": "t-1", "problem": "P?", "reasoning": "So 3 + 4 = 7.",
           "structure": Structure(steps=steps).model_dump(mode="json")}
    if span_format is not None:
        row["span_format"] = span_format
    (tmp_path / "demo.jsonl").write_text(json.dumps(row) + "\n")
    assert main(["--from-out", str(tmp_path), "--tasks", "demo"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["span_format"] == span_format
    assert (out["plans_restating_question"] is None) is plans_null
    assert (out["plan_chars_share"] is None) is plans_null
    assert out["answers_flawed"] == 0.0  # the other figures are there either way


@pytest.mark.parametrize(("ids", "problems", "block", "want"), [
    ([[1, 2, 3, 4, 5], [1, 2, 3, 9], [7, 8]], ["p", "p", "q"], 2, (6, 2)),
    ([[1, 2, 3, 4], [1, 2, 3, 4, 6]], ["p", "p"], 4, (8, 0)),  # the prefix fills whole blocks
    ([[1, 2, 3], [1, 2, 3]], ["p", "p"], 2, (6, 2)),  # identical prompts: all of it shared
    ([[1, 2], [5, 2]], ["p", "p"], 2, (0, 0)),  # nothing shared
    ([[1, 2, 3]], ["p"], 2, (0, 0)),  # one prompt: nothing to share with
    ([[1, 2, 3], [1, 2, 4]], ["p", " p\n"], 2, (4, 0)),  # one problem, as its prompts write it
    ([], [], 32, (0, 0)),
])
def test_prefix_past_block(ids: list[list[int]], problems: list[str], block: int,
                           want: tuple[int, int]) -> None:
    from benchmarks.decompose import prefix_past_block

    assert prefix_past_block(ids, problems, block) == want


@pytest.mark.parametrize(("ids", "block", "want"), [
    ([[1, 2, 3, 4, 5], [1, 2, 3, 4, 9], [1, 2, 7, 4], [5, 6]], 2, 6),
    ([[1, 2, 3], [1, 2, 3]], 2, 2),  # a copy: its whole blocks, not its partial last one
    ([[5, 6, 1, 2], [7, 8, 1, 2]], 2, 0),  # a block is held only with all before it
    ([[1, 2], [3, 4], [1, 2, 3, 4]], 2, 2),  # (3, 4) was held after another prefix
    ([[1, 2, 3, 4]], 4, 0),  # the first prompt computes its blocks
    ([], 32, 0),
])
def test_block_hits(ids: list[list[int]], block: int, want: int) -> None:
    from benchmarks.decompose import block_hits

    assert block_hits(ids, block) == want


@pytest.mark.parametrize(("ids", "shared", "at", "block", "want"), [
    ([1, 2, 3, 4, 5], 3, 1, 4, [1, 0, 2, 3, 4, 5]),  # one pad brings 3 shared to 4
    ([1, 2, 3, 4, 5], 4, 1, 4, [1, 2, 3, 4, 5]),  # already whole blocks
    ([1, 2, 3, 4, 5], 5, 5, 4, [1, 2, 3, 4, 5, 0, 0, 0]),  # at the end of the shared part
    ([1, 2], 1, 0, 32, [*[0] * 31, 1, 2]),
])
def test_align_ids(ids: list[int], shared: int, at: int, block: int, want: list[int]) -> None:
    from benchmarks.prefix_blocks import align_ids

    got = align_ids(ids, shared, at, block, 0)
    assert got == want
    assert (shared + len(got) - len(ids)) % block == 0


def test_align_ids_refuses_padding_outside_the_shared_prefix() -> None:
    from benchmarks.prefix_blocks import align_ids

    with pytest.raises(ValueError, match="inside the shared prefix"):
        align_ids([1, 2, 3], shared=1, at=2, block=4, pad=0)


@pytest.mark.parametrize(("argv", "err"), [
    (["--traces", "/nonexistent/t.jsonl"], "/nonexistent/t.jsonl"),
    (["--traces", "/dev/null", "--modes", "default,fast"], "unknown mode"),
    (["--traces", "/dev/null", "--fixed-new-tokens", "0"], "at least 1"),
])
def test_prefix_blocks_bad_input_exits_2(argv: list[str], err: str,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    from benchmarks.prefix_blocks import main

    assert main(argv) == 2
    assert err in capsys.readouterr().err


@pytest.mark.parametrize(("marks", "distinct_spans", "steps_as_the_text"), [
    # why: spaces change the describer's prompts, not the words the segmenter reads
    ("spaces", True, True),
    # "(attempt N)" made every span distinct too, but the segmenter reads it as steps
    ("attempt", True, False),
    # only the opening differs: the later steps are the group's, described once
    ("opener", False, False),
])
def test_load_student_marks(marks: str, distinct_spans: bool, steps_as_the_text: bool) -> None:
    import random
    import re

    from benchmarks.load import _load, raw_student
    from gsrm.describe import span_text
    from gsrm.segment import get_segmenter

    texts = [_load("student_aligned.json")["reasoning"],
             _load("student_misaligned.json")["reasoning"]]
    seg = get_segmenter("trained")
    rng = random.Random(0)
    students = [raw_student(i, rng, texts, marks) for i in range(1, 9)]
    spans = seg.segment_many(students)
    later = [[span_text(s, sp) for sp in ss[1:]] for s, ss in zip(students, spans, strict=True)]
    seen = [t for ts in later for t in ts]
    assert (len(set(seen)) >= 0.9 * len(seen)) is distinct_spans  # (attempt: 49 of 51)
    # the same steps as the unmarked text with its opener, word for word
    plain = [" ".join(re.sub(r"\s*\(attempt \d+\)", "", s).split()) for s in students]
    base = seg.segment_many(plain)
    same = all([" ".join(span_text(s, sp).split()) for sp in ss]
               == [span_text(p, sp) for sp in bs]
               for s, ss, p, bs in zip(students, spans, plain, base, strict=True))
    assert same is steps_as_the_text


def test_load_student_marks_refuses_an_unknown_mark() -> None:
    import random

    from benchmarks.load import raw_student

    with pytest.raises(ValueError, match="unknown marks 'tabs'"):
        raw_student(0, random.Random(0), ["Text."], "tabs")


@pytest.mark.parametrize(("argv", "rows"), [
    (["--concurrency", "1", "32"], 32),  # the concurrency-32 level's students
    (["--concurrency", "1"], 3),  # concurrency 1 sends --b-min-requests
    (["--concurrency", "8", "--b-rounds", "1"], 8),
])
def test_load_writes_a_runs_students(tmp_path: Path, argv: list[str], rows: int) -> None:
    from benchmarks.load import main

    out = tmp_path / "students.jsonl"
    assert main([*argv, "--write-students", str(out)]) == 0
    got = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(got) == rows and len({g["reasoning"] for g in got}) == rows
    assert all(g["problem"] and g["reasoning"] for g in got)
    assert not list(tmp_path.glob("*.tmp"))  # written atomically


@pytest.mark.slow
def test_prefix_blocks_fixed_reply_length_on_the_default_engine(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The real engine: every reply exactly N tokens, in both prompt layouts."""
    from benchmarks.load import _load
    from benchmarks.prefix_blocks import main

    trace = _load("student_aligned.json")
    traces = tmp_path / "t.jsonl"
    traces.write_text(json.dumps({"problem": _load("teacher_steps.json")["problem"],
                                  "reasoning": trace["reasoning"]}) + "\n")
    assert main(["--traces", str(traces), "--threads", "2", "--fixed-new-tokens", "5",
                 "--modes", "default,aligned"]) == 0
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert line["fixed_new_tokens"] == 5
    for mode in ("default", "aligned"):
        got = line["modes"][mode]
        assert got["completion_tokens"] == 5 * line["distinct_prompts"], mode
        assert got["incomplete"] is None and got["same_as_default"] is None, mode
    # aligned prompts carry the padding that brings the shared prefix to whole blocks
    assert line["modes"]["aligned"]["prefix_tokens_past_block"] == 0
    assert line["modes"]["aligned"]["prompt_tokens"] > line["modes"]["default"]["prompt_tokens"]
