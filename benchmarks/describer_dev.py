"""How often does the describer leave a step incomplete or run to its budget? (dev splits)

Prints ONE JSON line per task: the shipped segmenter cuts each dev-split trace (``eval.splits``)
into spans, the describer describes every span (``gsrm.describe.describe_many``, the path every
decomposition takes), and the line says how many traces have every step complete
(``parse_valid``, as ``gsrm-eval`` counts it) and how many span descriptions ended at their
token budget without a complete step (and how many steps lack a part, how many answers that
state a number state only numbers written in their span, how many answers copy a stretch of
their span instead of stating its result, how many are a question or empty, how many have
any of these flaws, how many plans only restate their question and the plans' share of the
text, and the completion tokens spent).
Why a separate script: the describer's data mix, its format repair (``--repair-rounds``) and
its budget (``--max-new-tokens``) are chosen on these dev figures, never on the test splits
``gsrm-eval run`` reports; the describer model card's dev table comes from here. ``--split test`` reports a choice already made on dev, per task (``gsrm-eval run``
pools the tasks' spans in one batch).

Example::

    $ python benchmarks/describer_dev.py --backend openvino --ov-weights int8 --ov-precision auto
    $ python benchmarks/describer_dev.py --adapter runs/describer/adapter --repair-rounds 0
"""

from __future__ import annotations

import argparse
import functools
import json
import re
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from anywhere: import the checkout's gsrm
    sys.path.insert(0, str(ROOT))

TASKS = ("prm800k-steps", "champ-steps", "bbm-steps", "branching-steps", "gsm8k-socratic")
_NUMBER = re.compile(r"\d+(?:\.\d+)?")


def numbers(text: str) -> set[str]:
    """The numbers written in ``text``: thousands commas dropped, trailing decimal zeros
    dropped ("$352.00" and "2.50" read as 352 and 2.5), otherwise digits as written.

    Digits as written, not ``gsrm.judges.numbers_in``'s values: that one reads "48 / 2" as
    24 and "1/3" as one value, so an answer "1/3" would not be found in a span's LaTeX
    "\\frac{1}{3}"; here both give 1 and 3. The trailing zeros go because a brief answer
    "$352" states the span's "$352.00", and counting it as made up charged a describer for
    the rounding the issue asks of it.

    >>> sorted(numbers("So 1,200 + 3.5 = 1203.5 eggs"))
    ['1200', '1203.5', '3.5']
    >>> sorted(numbers("$352.00 and 2.50 and 10.05 and 100"))
    ['10.05', '100', '2.5', '352']
    """
    return {_canonical(n) for n in _NUMBER.findall(text.replace(",", ""))}


def _canonical(number: str) -> str:
    """``number`` without trailing decimal zeros (and without its point when none is left)."""
    return number.rstrip("0").rstrip(".") if "." in number else number


def grounding(steps: Sequence[tuple[str, str]]) -> tuple[int, int]:
    """(answers that state a number, those whose every number is written in their span) for
    ``(answer, span text)`` pairs.

    Why: parse-valid says a step has its three parts, not that its answer is the span's
    result. An answer whose number is nowhere in its span was made up (or computed by the
    describer, which a 135M model does badly), so the share is a label-free check of answers
    on the long traces, whose dev splits have no reference descriptions.

    >>> grounding([("60", "we get $x=60$."), ("15", "each one is $x$."), ("x", "Let x be")])
    (2, 1)
    """
    pairs = [(numbers(a), numbers(span)) for a, span in steps]
    stated = [(a, s) for a, s in pairs if a]
    return len(stated), sum(a <= s for a, s in stated)


def copies(steps: Sequence[tuple[str, str]]) -> int:
    """How many ``(answer, span text)`` pairs have an answer that copies a stretch of its span
    (``gsrm.text.copies_span``: six words or more, whitespace and a final full stop aside).

    Why: issue 16 asks for the step's result stated briefly, never a copied sentence of the
    trace, and a copy passes ``grounding`` (its numbers are in the span by construction), so
    the two are read together.

    >>> copies([("10, and it divides evenly, so there are 10 cartons",
    ...          "60 / 6 = 10, and it divides evenly, so there are 10 cartons."),
    ...         ("10 cartons", "so there are 10 cartons."),
    ...         ("the farmer makes ten dollars and more", "So the farmer makes $25.")])
    1
    """
    from gsrm.text import copies_span

    return sum(copies_span(a, span) for a, span in steps)


def questions(answers: Sequence[str]) -> int:
    """How many answers are a question (end with "?") instead of a result.

    Why: ``grounding`` sees only answers that state a number. Where a span's result is not a
    number (a sorted list, a bracket sequence, a true/false judgement: BIG-Bench Mistake) a
    describer may restate the sub-problem as the answer, which no other figure here counts.

    >>> questions(["72 eggs", "How many stack entries are in the stack?", "", "yes?"])
    2
    """
    return sum(map(is_question, answers))


def is_question(answer: str) -> bool:
    """Whether ``answer`` ends with "?" (whitespace aside): the one test of ``questions``
    and ``flawed``."""
    return answer.strip().endswith("?")


def flawed(steps: Sequence[tuple[str, str]]) -> int:
    """How many ``(answer, span text)`` pairs have an answer with any flaw the figures above
    count: empty, a question, a number not written in its span, or a copied stretch of it.

    Why one count: each figure alone rewards trading one flaw for another (an answer rule that
    stops copies can make up numbers instead, one that stops questions can make up counts), so
    describers are compared on this and on the parts together.

    >>> flawed([("72 eggs", "so 72 eggs."), ("How many?", "stack: < ("), ("5", "Right."),
    ...         ("", "x"), ("so there are 10 cartons in all", "so there are 10 cartons in all.")])
    4
    """
    from gsrm.text import copies_span

    return sum(not a.strip() or is_question(a) or grounding([(a, span)]) == (1, 0)
               or copies_span(a, span) for a, span in steps)


@functools.cache
def _plan_verb() -> re.Pattern[str]:
    """A plan's opening verb: the data's (``gsrm.plans.PLAN_VERBS``) and other plan verbs
    (built once)."""
    from gsrm.plans import PLAN_VERBS

    verbs = [v.lower() for v in PLAN_VERBS] + ["determine", "calculate", "compute"]
    return re.compile(rf"^\s*(?:{'|'.join(map(re.escape, verbs))})\b\s*", re.IGNORECASE)

RESTATES = 0.8
"""Token F1 (``gsrm.judges.token_f1``) at or above which a plan restates its question."""


def restates_question(meta: str, subproblem: str) -> bool:
    """Whether a step's plan (meta-reasoning) says no more than its sub-problem: after its
    opening plan verb ("Find", "Work out", "Figure out", ...), token F1 >= ``RESTATES`` with
    the question.

    Why: the describers' training data derives every GSM8K plan from its human question
    (``training.descdata.describe_meta``: a random verb + the question turned into an
    object), so a plan may be the question reworded, decoded at the cost of a line's tokens
    and compared by the reward's meta gate as if it said something else. This counts how often.

    >>> restates_question("Figure out how many eggs are left.", "How many eggs are left?")
    True
    >>> restates_question("Count the eggs first, then the cartons.", "How many eggs are left?")
    False
    """
    from gsrm.judges import token_f1

    return token_f1(_plan_verb().sub("", meta), subproblem) >= RESTATES


def quality(structs: Sequence[Any], reasonings: Sequence[str]) -> dict[str, Any]:
    """The figures of a task's structures that need no timing (also read from ``--out``
    files by ``--from-out``)."""
    pairs = [(st.answer, r[st.span[0]:st.span[1]])
             for s, r in zip(structs, reasonings, strict=True)
             for st in s.steps if st.span is not None]
    steps = [st for s in structs for st in s.steps]
    stated, grounded = grounding(pairs)
    return {
        "parse_valid": round(sum(1.0 for s in structs if s.steps and all(
            st.is_complete for st in s.steps)) / max(1, len(structs)), 3),
        "steps_incomplete": sum(not st.is_complete for s in structs for st in s.steps),
        "numeric_answers": stated,
        "answer_numbers_in_span": round(grounded / max(1, stated), 3),
        "answers_copied": round(copies(pairs) / max(1, len(pairs)), 3),
        "answers_as_questions": round(questions([a for a, _ in pairs]) / max(1, len(pairs)),
                                      3),
        "answers_empty": sum(not a.strip() for a, _ in pairs),
        "answers_flawed": round(flawed(pairs) / max(1, len(pairs)), 3),
        "plans_restating_question": round(sum(restates_question(st.meta, st.subproblem)
                                              for st in steps) / max(1, len(steps)), 3),
        # the plan's share of the three parts' characters: what a describer that did not
        # write it would save of its decoding, roughly (tokens follow characters)
        "plan_chars_share": round(sum(len(st.meta) for st in steps) / max(1, sum(
            len(st.meta) + len(st.subproblem) + len(st.answer) for st in steps)), 3),
        "completion_tokens": sum(s.generation.completion_tokens for s in structs
                                 if s.generation is not None),
    }


def from_out(folder: Path, tasks: Sequence[str]) -> int:
    """Print the ``quality`` figures of a run's ``--out`` files (no model is loaded)."""
    from gsrm.spanformat import get_span_format
    from gsrm.structure import Structure

    for name in tasks:
        path = folder / f"{name}.jsonl"
        if not path.is_file():
            print(f"describer_dev: {path}: not found", file=sys.stderr)
            return 2
        rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        structs = [Structure.model_validate(r["structure"]) for r in rows]
        # files written since the span format was recorded say it; older ones do not
        formats = {r.get("span_format") for r in rows} - {None}
        derived = any(get_span_format(f).derives_meta for f in formats)
        figures = without_plan(quality(structs, [r["reasoning"] for r in rows]), derived)
        print(json.dumps({"task": name, "from": str(path), "traces": len(rows),
                          "span_format": formats.pop() if len(formats) == 1 else None,
                          **figures}), flush=True)
    return 0


def without_plan(figures: dict[str, Any], derived: bool) -> dict[str, Any]:
    """``figures`` with the two plan figures null when the describer's format derives the
    plan from the question (``qa``): it wrote no plan, so they would measure
    ``gsrm.plans.plan_for``, not the model."""
    if not derived:
        return figures
    return {**figures, "plans_restating_question": None, "plan_chars_share": None}


def main(argv: Sequence[str] | None = None) -> int:
    """Print one JSON line per task; 2 when a task's data is missing."""
    from eval.tasks import get_task
    from eval.tasks.base import DataMissing, TaskContext
    from gsrm.backends import get_backend
    from gsrm.backends.openvino import add_early_stop_arg, add_openvino_args
    from gsrm.describe import (
        BUDGET_WARNING,
        REPAIR_AT_BUDGET,
        REPAIR_ROUNDS,
        RETRY_ROUNDS,
        add_prefix_warmup_arg,
        describe_many,
    )
    from gsrm.io import write_text_atomic
    from gsrm.segment import get_segmenter
    from gsrm.spanformat import get_span_format

    p = argparse.ArgumentParser(prog="python benchmarks/describer_dev.py",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--tasks", default=",".join(TASKS), help="comma-separated gsrm-eval tasks")
    p.add_argument("--limit", type=int, default=50, help="traces per task (default: 50)")
    p.add_argument("--data", type=Path, default=None, help="data root (default: gsrm-eval's)")
    p.add_argument("--backend", default="openvino", choices=("transformers", "openvino"))
    p.add_argument("--adapter", default="auto", help="describer adapter (default: shipped)")
    p.add_argument("--max-new-tokens", type=int, default=None,
                   help="token budget per span (default: the describer's span format's, "
                        "SpanFormat.max_new_tokens, as the GSRM uses)")
    p.add_argument("--repair-rounds", type=int, default=REPAIR_ROUNDS)
    p.add_argument("--retry-rounds", type=int, default=RETRY_ROUNDS,
                   help="fresh-batch retries of spans with no step or cut at the budget "
                        "(default: %(default)s)")
    p.add_argument("--repair-at-budget", action=argparse.BooleanOptionalAction,
                   default=REPAIR_AT_BUDGET,
                   help="continue completions cut by the budget with the next part's header "
                        "(gsrm.describe.REPAIR_AT_BUDGET; default: %(default)s)")
    add_prefix_warmup_arg(p)
    p.add_argument("--split", choices=("dev", "test"), default="dev",
                   help="dev (default) to choose settings on; test only to report a choice "
                        "made on dev")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", type=Path, default=None,
                   help="folder: write each task's structures to TASK.jsonl there (atomically), "
                        "one {id, problem, reasoning, structure} per trace, to read which spans "
                        "were cut or left incomplete")
    p.add_argument("--from-out", type=Path, default=None, metavar="DIR",
                   help="load no model: print the figures that need no timing (parse-valid, "
                        "answer grounding, tokens) from an earlier run's --out folder")
    add_openvino_args(p)
    add_early_stop_arg(p)
    args = p.parse_args(argv)
    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    if args.from_out is not None:
        return from_out(args.from_out, tasks)

    kw: dict[str, object] = {"adapter": args.adapter, "batch_size": args.batch_size,
                             "threads": args.threads}
    if args.backend == "openvino":
        kw.update(weights=args.ov_weights, precision=args.ov_precision,
                  kv_cache_gb=args.ov_kv_cache_gb,
                  early_stop=args.ov_early_stop)
    backend = get_backend(args.backend, **kw)
    if args.prefix_warmup is not None:
        backend.prefix_warmup = args.prefix_warmup
    fmt = get_span_format(backend.span_format)
    budget_per_span = fmt.budget(args.max_new_tokens)
    segmenter = get_segmenter()
    ctx = TaskContext(limit=args.limit, split=args.split)
    if args.data is not None:
        ctx.data_root = args.data
    for name in tasks:
        try:
            items = get_task(name).load(ctx).items
        except DataMissing as exc:
            print(f"describer_dev: {name}: {exc}", file=sys.stderr)
            return 2
        texts = [it.reasoning for it in items]
        spans = segmenter.segment_many(texts)
        t0 = time.perf_counter()
        structs = describe_many(backend, [(it.problem, it.reasoning, ss)
                                          for it, ss in zip(items, spans, strict=True)],
                                budget_per_span, args.repair_rounds, args.retry_rounds,
                                args.repair_at_budget)
        wall = time.perf_counter() - t0
        if args.out is not None:
            args.out.mkdir(parents=True, exist_ok=True)
            write_text_atomic(args.out / f"{name}.jsonl", "".join(
                json.dumps({"id": getattr(it, "id", n), "problem": it.problem,
                            "reasoning": it.reasoning, "span_format": fmt.name,
                            "structure": s.model_dump(mode="json")}) + "\n"
                for n, (it, s) in enumerate(zip(items, structs, strict=True))))
        # the summary warning only: a retry's warning names the budget too
        budget = sum(int(w.split(" ", 1)[0]) for s in structs for w in s.warnings
                     if w.endswith(f" {BUDGET_WARNING}"))
        figures = without_plan(quality(structs, texts), fmt.derives_meta)
        print(json.dumps({
            "task": name, "split": args.split, "traces": len(items),
            "spans": sum(len(ss) for ss in spans),
            "parse_valid": figures["parse_valid"],
            "spans_at_budget": budget, "describe_s": round(wall, 1),
            # steps whose completion (first, or a repair continuation) the budget cut,
            # whatever happened next: continued after the cut or described again
            "first_completions_at_budget": sum(
                "token budget" in w and not w.endswith(BUDGET_WARNING)
                for s in structs for w in s.warnings),
            "spans_described_again": sum("described again" in w for s in structs
                                         for w in s.warnings),
            "steps_incomplete": figures["steps_incomplete"],
            "numeric_answers": figures["numeric_answers"],
            "answer_numbers_in_span": figures["answer_numbers_in_span"],
            "answers_copied": figures["answers_copied"],
            "answers_as_questions": figures["answers_as_questions"],
            "answers_empty": figures["answers_empty"],
            "answers_flawed": figures["answers_flawed"],
            "plans_restating_question": figures["plans_restating_question"],
            "plan_chars_share": figures["plan_chars_share"],
            "completion_tokens": figures["completion_tokens"],
            "backend": backend.name, "model": backend.model_id,
            "span_format": backend.span_format,
            "max_new_tokens": budget_per_span, "repair_rounds": args.repair_rounds,
            "retry_rounds": args.retry_rounds, "repair_at_budget": args.repair_at_budget,
            "prefix_warmup": backend.prefix_warmup,
            "early_stop": getattr(backend, "early_stop", None),
        }), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
