"""Build GSRM SFT examples from real step-labelled data sets.

Why a module of its own: the GSRM is only as good as its targets, and every target must be
traceable to human-written data (or a validated teacher-LLM label, see ``training.label``).
Each example is ``(problem, raw reasoning trace) -> canonical structure``; the input prompt is
built by ``gsrm.prompts.build_messages`` at tokenisation time, so training and inference use
the same prompt text.

Sources (a registry by name; every one read by path, nothing copied into the repository):

- ``gsm8k-socratic`` (``gsm8k/test_socratic.jsonl``): each solution line is
  ``sub-question ** step``. Sub-problem = the human sub-question; answer =
  ``gsrm.calibrate.brief_answer`` of the step (its arithmetic removed, results kept); the
  trace = the plain solution lines (identical to ``test.jsonl``, calculator notes removed).
  Items with index >= 1000 are the fixed evaluation split (always ``test``).
- ``gsm8k-train`` (``gsm8k/train.jsonl``, no sub-questions): the sub-problem is *derived*
  from the step by :func:`derive_subproblem`: "How many <unit words after the result>?" when
  the step's result is followed by unit words ("... = 9 duck eggs a day" -> "How many duck
  eggs a day?"), "How much money ...?" for a $ result, else "What is <expression>?".
- ``prm800k`` (``prm800k_phase1/phase1_train_plus*.parquet``; ``phase1_test*`` is the fixed
  evaluation split) and ``prmbench`` (``prmbench/prm800k_train_*`` ``original_process``;
  ``prm800k_test_*`` is fixed evaluation), ``champ`` (PyPI ``champ-dataset``), ``bbm``
  (``bigbench_mistake/*.jsonl``): human step boundaries only. Their labels are weak and
  documented as such: sub-problem = the step's first sentence (what it sets out to do),
  answer = :func:`gsrm.calibrate.brief_answer` of its last sentence, meta-reasoning from
  :func:`weak_meta`. They supervise where steps begin and end; a trace is cut to its first
  ``WEAK_MAX_STEPS`` steps.
- ``labels`` (``--labels FILE``): validated teacher-LLM decompositions written by
  ``gsrm-train label`` (the paper's path: GPT-4o labelling DeepSeek-R1 traces).

Meta-reasoning text: no human data set has it, so it is derived from the step's position and
its sub-problem by :func:`derive_meta` ("First, work out ...", "Next, ...", "Finally, use
the previous results to ..."). It names the sub-problem the step is devoted to, which is
exactly what the reward's meta judge compares; it never states the step's answer.

Layouts (:func:`render_trace`): a raw trace must not give its boundaries away, so each
example's steps are joined by one layout drawn with the example's seed: ``space`` (one line),
``connective`` (one line, some steps opened with "Then", "Next,", "So", ...), ``paragraph``
(random groups of 1-3 steps per paragraph) or ``newline``. Splits are by problem (a hash of
the normalised problem text) and the fixed evaluation items are always ``test``; test
problems never enter training.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

from pydantic import BaseModel, Field, StringConstraints, ValidationError

from eval.tasks.base import read_jsonl, validate_row
from eval.tasks.sanity import solution_lines
from gsrm.calibrate import brief_answer, parse_socratic
from gsrm.io import InputError, write_text_atomic
from gsrm.prompts import render_structure
from gsrm.structure import Step, Structure

Split = Literal["train", "validation", "test"]
M = TypeVar("M", bound=BaseModel)
Layout = Literal["space", "connective", "paragraph", "newline"]

LAYOUT_WEIGHTS: dict[str, float] = {"space": 0.5, "connective": 0.2, "paragraph": 0.15,
                                    "newline": 0.15}
CONNECTIVES = ("Then", "Next,", "So", "After that,", "Now", "Also,")
_LOWER_FIRST = {"The", "She", "He", "They", "It", "We", "This", "There", "That", "These",
                "Those", "His", "Her", "Their", "Our", "In", "If", "Since", "Each", "A", "An",
                "After", "For", "To", "All", "One", "I"}
_SENT = re.compile(r"(?<=[.!?])\s+(?=[A-Z$\d(])")


class SFTExample(BaseModel):
    """One training example as written to JSONL (the boundary format of ``gsrm-train sft``)."""

    id: str
    source: str
    split: Split
    problem: str = Field(min_length=1)
    reasoning: str = Field(min_length=1, description="the raw trace the GSRM reads")
    target: str = Field(min_length=1, description="the canonical structure it must write")
    context: str = Field(default="", description="describer rows: the previous step's text "
                         "(shown by a span format with ``previous``; empty for a first step)")
    layout: str = ""
    n_steps: int = Field(ge=1)
    train_wording: bool | None = Field(
        default=None, description="describer rows: train the meta-reasoning and sub-problem "
        "wording (True), mask it (False), or decide by source (None: training.sft."
        "WORDING_SOURCES); `gsrm-train describer-relabel` sets it for the rows it rewords")


@dataclass(frozen=True)
class Labeled:
    """A problem with its human (or validated) step labels, before layout."""

    id: str
    source: str
    problem: str
    steps: tuple[Step, ...]
    texts: tuple[str, ...]
    final_answer: str | None = None
    fixed_split: Split | None = None  # the shared evaluation splits are always "test"


@dataclass
class BuildReport:
    """What a source yielded and what it skipped (with the file and line of each skip)."""

    counts: Counter[str] = field(default_factory=Counter)
    problems: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------- derivations
def override_mix(base: Mapping[str, int | None], text: str | None, flag: str = "--mix"
                 ) -> dict[str, int | None]:
    """``base`` with the ``source=N`` overrides of ``text`` ("bbm=360,champ=0"; N may be
    ``all`` where the base allows it), so a data-mix experiment is a flag, not an edit. An
    unknown source or a bad count is refused naming it and the known sources."""
    mix: dict[str, int | None] = dict(base)
    allow_all = any(v is None for v in base.values())
    for part in (text or "").split(","):
        if not part.strip():
            continue
        name, sep, count = (x.strip() for x in part.partition("="))
        if not sep or name not in base:
            raise ValueError(f"{flag}: {part.strip()!r} is not source=N with a source of: "
                             f"{', '.join(base)}")
        if count == "all" and allow_all:
            mix[name] = None
        elif count.isdigit():
            mix[name] = int(count)
        else:
            raise ValueError(f"{flag}: the count of {name!r} must be a whole number >= 0"
                             f"{' or all' if allow_all else ''}, got {count!r}")
    return mix


def sentences(text: str) -> list[str]:
    """Split prose into sentences (a capital, digit, $ or ( after . ! ?)."""
    return [s.strip() for s in _SENT.split(text.strip()) if s.strip()]


def _question_body(q: str) -> str:
    q = q.strip().rstrip("?").strip()
    return q[:1].lower() + q[1:] if q[:1].isupper() and not q[:2].isupper() else q


def derive_meta(index: int, n_steps: int, subproblem: str) -> str:
    """Meta-reasoning for step ``index`` (0-based) of ``n_steps``, naming its sub-problem.

    >>> derive_meta(0, 2, "How many eggs does Janet sell?")
    'First, work out how many eggs does Janet sell, from the facts given.'
    >>> derive_meta(1, 2, "How much does she make?")
    'Finally, use the previous results to work out how much does she make.'
    """
    body = _question_body(subproblem)
    if n_steps > 1 and index == n_steps - 1:
        return f"Finally, use the previous results to work out {body}."
    if index == 0:
        return f"First, work out {body}, from the facts given."
    return f"Next, with that known, work out {body}."


_RESULT = re.compile(r"=\s*(\$?)\s*(-?[\d,]*\.?\d+%?)\s*(.*)$")
_UNIT_TAIL = re.compile(r"^([A-Za-z][A-Za-z' -]*?)(?:[.,;!]|$)")


def derive_subproblem(step_text: str) -> str:
    """A question for a GSM8K step that has none (train.jsonl), from its result and units.

    >>> derive_subproblem("Janet sells 16 - 3 - 4 = 9 duck eggs a day.")
    'How many duck eggs a day?'
    >>> derive_subproblem("She makes 9 * 2 = $18 every day at the market.")
    'How much money, in dollars, every day at the market?'
    >>> derive_subproblem("So the total is 2+1=3")
    'What is 2+1?'
    """
    text = step_text.strip()
    m = None
    for m in _RESULT.finditer(text):
        pass
    if m is None:
        first = sentences(text)[0] if text else text
        return f"What follows from: {first.rstrip('.')}?"
    dollar, _, tail = m.group(1), m.group(2), m.group(3).strip()
    unit = _UNIT_TAIL.match(tail)
    words = unit.group(1).strip() if unit else ""
    if dollar:
        return f"How much money, in dollars{', ' + words if words else ''}?"
    if words and not words.lower().startswith(("and ", "so ", "which ")):
        return f"How many {words}?"
    left = text[: m.start()].rstrip()
    expr = re.findall(r"[\d$.,()%]+(?:\s*[-+*/x]\s*[\d$.,()%]+)+\s*$", left)
    return f"What is {expr[0].strip() if expr else left.split()[-1] if left else '?'}?"


def weak_step(text: str) -> tuple[str, str]:
    """(sub-problem, answer) weak labels for a step that has only boundaries (see module)."""
    sents = sentences(text) or [text]
    sub = sents[0]
    ans = brief_answer(sents[-1]) if len(sents) > 1 else brief_answer(sents[0])
    if len(sub) > 240:
        sub = sub[:240].rsplit(" ", 1)[0] + " ..."
    if len(ans) > 240:
        ans = ans[-240:].split(" ", 1)[-1]
    return sub, ans


def weak_meta(index: int, n_steps: int, text: str) -> str:
    """Meta-reasoning for a boundary-only step: its position and its opening words.

    >>> weak_meta(0, 3, "We first square both sides of the equation.")
    'First, begin with the step that opens: "We first square both sides of..."'
    """
    words = text.split()
    head = " ".join(words[:6]) + ("..." if len(words) > 6 else "")
    lead = "First, begin with" if index == 0 else (
        "Finally, conclude with" if index == n_steps - 1 and n_steps > 1 else "Next, take")
    return f'{lead} the step that opens: "{head}"'


def label_steps(texts: Sequence[str], subproblems: Sequence[str],
                answers: Sequence[str]) -> tuple[Step, ...]:
    """Steps with derived meta-reasoning (one per text)."""
    n = len(texts)
    return tuple(Step(meta=derive_meta(i, n, q), subproblem=q, answer=a)
                 for i, (q, a) in enumerate(zip(subproblems, answers)))


# --------------------------------------------------------------------------- layout
def _open_with(connective: str, step: str) -> str:
    first = step.split(" ", 1)[0]
    if first in _LOWER_FIRST:
        step = step[0].lower() + step[1:]
    return f"{connective} {step}"


def render_trace(texts: Sequence[str], rng: random.Random) -> tuple[str, Layout]:
    """Join step texts into one raw trace with a layout drawn from ``rng`` (see module).

    >>> render_trace(["A is 1.", "B is 2."], random.Random(0))[1] in LAYOUT_WEIGHTS
    True
    """
    names = list(LAYOUT_WEIGHTS)
    layout: Layout = rng.choices(names, weights=[LAYOUT_WEIGHTS[n] for n in names])[0]  # type: ignore[assignment]
    clean = [" ".join(t.split()) for t in texts]
    if layout == "newline":
        return "\n".join(clean), layout
    if layout == "connective":
        out = [clean[0]]
        for t in clean[1:]:
            starts = t.split(" ", 1)[0].rstrip(",")
            if rng.random() < 0.5 and starts not in {"So", "Then", "Next", "Now", "Also"}:
                out.append(_open_with(rng.choice(CONNECTIVES), t))
            else:
                out.append(t)
        return " ".join(out), layout
    if layout == "paragraph":
        paras: list[str] = []
        i = 0
        while i < len(clean):
            k = rng.randint(1, 3)
            paras.append(" ".join(clean[i:i + k]))
            i += k
        return "\n\n".join(paras), layout
    return " ".join(clean), layout


# --------------------------------------------------------------------------- splits
def problem_key(problem: str) -> str:
    """A stable hash of the normalised problem text (splits are by problem)."""
    norm = " ".join(problem.lower().split())
    return hashlib.sha256(norm.encode()).hexdigest()


def assign_split(problem: str, val_frac: float = 0.05, test_frac: float = 0.05) -> Split:
    """Hash-based split by problem, stable across runs and machines."""
    u = int(problem_key(problem)[:8], 16) / 0xFFFFFFFF
    if u < test_frac:
        return "test"
    if u < test_frac + val_frac:
        return "validation"
    return "train"


# --------------------------------------------------------------------------- readers
Text = Annotated[str, StringConstraints(pattern=r"\S")]  # some non-space text, kept as is


class _QA(BaseModel):
    question: Text
    answer: Text


class _PRMBenchTrainRow(BaseModel):
    original_question: Text
    original_process: list[str] | str  # the train files hold the list as its Python repr


class _LabelRow(BaseModel):
    id: str | int | None = None
    problem: Text
    reasoning: Text
    structure: Structure


def _rows(path: Path, model: type[M], report: BuildReport) -> Iterator[tuple[int, M]]:
    """Valid rows of a JSONL file (the evaluation suite's reader and row check); bad lines
    go to ``report.problems`` with the file and line, a missing file raises."""
    if not path.is_file():
        raise InputError(path, None, "data file not found")
    for n, obj in read_jsonl(path, report.problems):
        row = validate_row(model, obj, f"{path}:{n}", report.problems)
        if row is not None:
            yield n, row


def read_gsm8k_socratic(root: Path, report: BuildReport) -> Iterator[Labeled]:
    """Socratic test items; index >= 1000 is the shared evaluation split (forced test)."""
    path = root / "gsm8k" / "test_socratic.jsonl"
    for n, row in _rows(path, _QA, report):
        q = row.question
        parsed = parse_socratic(row.answer)
        if not parsed.steps:
            report.problems.append(f"{path}:{n}: no 'question ** step' lines; skipped")
            continue
        texts = [s.text for s in parsed.steps]
        steps = label_steps(texts, [s.question for s in parsed.steps],
                            [brief_answer(t) for t in texts])
        yield Labeled(f"gsm8k-test-{n - 1}", "gsm8k-socratic", q, steps, tuple(texts),
                      parsed.final, "test" if n - 1 >= 1000 else None)


def read_gsm8k_train(root: Path, report: BuildReport) -> Iterator[Labeled]:
    """GSM8K train solutions with derived sub-problems (see :func:`derive_subproblem`)."""
    path = root / "gsm8k" / "train.jsonl"
    for n, row in _rows(path, _QA, report):
        q = row.question
        texts, final = solution_lines(row.answer), parse_socratic(row.answer).final
        if not texts:
            report.problems.append(f"{path}:{n}: no solution lines; skipped")
            continue
        steps = label_steps(texts, [derive_subproblem(t) for t in texts],
                            [brief_answer(t) for t in texts])
        yield Labeled(f"gsm8k-train-{n - 1}", "gsm8k-train", q, steps, tuple(texts), final)


WEAK_MAX_STEPS = 6
"""Boundary-only traces are cut to their first steps (a prefix of a trace with the prefix of
its decomposition is still a correct example), so they fit a small model's context."""


def _weak(id: str, source: str, problem: str, texts: Sequence[str],
          fixed: Split | None = None) -> Labeled | None:
    texts = [" ".join(t.split()) for t in texts if t and t.strip()][:WEAK_MAX_STEPS]
    if not texts:
        return None
    pairs = [weak_step(t) for t in texts]
    steps = tuple(Step(meta=weak_meta(i, len(texts), t), subproblem=q, answer=a)
                  for i, (t, (q, a)) in enumerate(zip(texts, pairs)))
    return Labeled(id, source, problem, steps, tuple(texts), None, fixed)


def read_prm800k(root: Path, report: BuildReport) -> Iterator[Labeled]:
    """PRM800K phase-1 train chains (the test file is the shared evaluation split)."""
    from eval.tasks.steps import load_prm800k

    folder = root / "prm800k_phase1"
    files = sorted(folder.glob("phase1_train*.parquet"))
    if not files:
        raise InputError(folder, None, "no phase1_train*.parquet file")
    for f in files:
        loaded = load_prm800k(f)
        report.problems.extend(loaded.problems)
        for k, it in enumerate(loaded.items):
            texts = [it.reasoning[s.start:s.end] for s in it.spans]
            lab = _weak(f"prm800k-train-{k}", "prm800k", it.problem, texts)
            if lab:
                yield lab


def read_prmbench(root: Path, report: BuildReport) -> Iterator[Labeled]:
    """PRMBench ``prm800k_train_*`` original processes, one per question."""
    from eval.tasks.prmbench import strip_numbering

    seen: set[str] = set()
    folder = root / "prmbench"
    for f in sorted(folder.glob("prm800k_train_*.jsonl")):
        for n, row in _rows(f, _PRMBenchTrainRow, report):
            q, proc = row.original_question, row.original_process
            if isinstance(proc, str):
                try:
                    import ast

                    proc = ast.literal_eval(proc)
                except (ValueError, SyntaxError):
                    proc = None
            if not isinstance(proc, list) or not all(isinstance(s, str) for s in proc):
                report.problems.append(f"{f}:{n}: original_process is not a list of text; skipped")
                continue
            if q in seen:
                continue
            seen.add(q)
            lab = _weak(f"prmbench-train-{len(seen)}", "prmbench", q,
                        [strip_numbering(s) for s in proc])
            if lab:
                yield lab


def read_champ(root: Path, report: BuildReport) -> Iterator[Labeled]:
    """CHAMP human solutions (PyPI ``champ-dataset``)."""
    from eval.tasks.steps import load_champ

    loaded = load_champ()
    report.problems.extend(loaded.problems)
    for it in loaded.items:
        lab = _weak(it.id, "champ", it.problem,
                    [it.reasoning[s.start:s.end] for s in it.spans])
        if lab:
            yield lab


def read_bbm(root: Path, report: BuildReport) -> Iterator[Labeled]:
    """BIG-Bench Mistake step-segmented traces."""
    from eval.tasks.steps import load_bbm

    loaded = load_bbm(root / "bigbench_mistake")
    report.problems.extend(loaded.problems)
    for it in loaded.items:
        lab = _weak(it.id, "bbm", it.problem, [it.reasoning[s.start:s.end] for s in it.spans])
        if lab:
            yield lab


def read_labels(path: Path, report: BuildReport) -> Iterator[Labeled]:
    """Validated teacher-LLM labels from ``gsrm-train label`` (``structure`` per line)."""
    for n, row in _rows(path, _LabelRow, report):
        s = row.structure
        if not s.steps:
            continue
        yield Labeled(str(row.id if row.id is not None else f"label-{n}"), "labels", row.problem,
                      tuple(s.steps), (row.reasoning,), s.final_answer)


Reader = Callable[[Path, BuildReport], Iterator[Labeled]]
SOURCES: dict[str, Reader] = {
    "gsm8k-socratic": read_gsm8k_socratic,
    "gsm8k-train": read_gsm8k_train,
    "prm800k": read_prm800k,
    "prmbench": read_prmbench,
    "champ": read_champ,
    "bbm": read_bbm,
}


# --------------------------------------------------------------------------- examples
def to_example(lab: Labeled, seed: int) -> SFTExample:
    """Lay out one labelled problem as a raw trace and its canonical target."""
    rng = random.Random(f"{seed}:{lab.id}")
    if lab.source == "labels":  # the labeller already saw a real trace: keep it as is
        reasoning, layout = lab.texts[0], "as-given"
    else:
        reasoning, layout = render_trace(lab.texts, rng)
    target = render_structure(Structure(steps=list(lab.steps), final_answer=lab.final_answer))
    split = lab.fixed_split or assign_split(lab.problem)
    return SFTExample(id=lab.id, source=lab.source, split=split, problem=lab.problem.strip(),
                      reasoning=reasoning, target=target, layout=layout,
                      n_steps=len(lab.steps))


def build(root: Path, sources: Sequence[str], seed: int = 0,
          labels: Path | None = None) -> tuple[list[SFTExample], BuildReport]:
    """All examples of the named sources (deterministic given ``seed``)."""
    unknown = [s for s in sources if s not in SOURCES]
    if unknown:
        raise KeyError(f"unknown source(s) {unknown}; known: {sorted(SOURCES)}")
    report = BuildReport()
    out: list[SFTExample] = []
    readers: list[tuple[str, Iterator[Labeled]]] = [(s, SOURCES[s](root, report))
                                                     for s in sources]
    if labels is not None:
        readers.append(("labels", read_labels(labels, report)))
    for name, it in readers:
        for lab in it:
            ex = to_example(lab, seed)
            out.append(ex)
            report.counts[f"{name}/{ex.split}"] += 1
    return out, report


def write_dataset(examples: Sequence[SFTExample], out_dir: Path, report: BuildReport,
                  meta: dict[str, Any]) -> dict[str, Any]:
    """Write ``{train,validation,test}.jsonl`` and ``manifest.json`` atomically."""
    out_dir.mkdir(parents=True, exist_ok=True)
    manifest: dict[str, Any] = {**meta, "files": {}, "counts": dict(sorted(report.counts.items())),
                                "skipped": len(report.problems),
                                "skipped_examples": report.problems[:50]}
    for split in ("train", "validation", "test"):
        rows = [e for e in examples if e.split == split]
        # exclude_none: rows without ``train_wording`` are written as before it existed
        text = "".join(e.model_dump_json(exclude_none=True) + "\n" for e in rows)
        write_text_atomic(out_dir / f"{split}.jsonl", text)
        manifest["files"][f"{split}.jsonl"] = {
            "examples": len(rows), "sha256": hashlib.sha256(text.encode()).hexdigest()}
    write_text_atomic(out_dir / "manifest.json", json.dumps(manifest, indent=2) + "\n")
    return manifest


def load_examples(path: Path) -> list[SFTExample]:
    """Read SFT examples; a bad line stops with the file and line number."""
    out: list[SFTExample] = []
    if not path.is_file():
        raise InputError(path, None, "file not found")
    with path.open(encoding="utf-8") as fh:
        for n, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                out.append(SFTExample.model_validate_json(line))
            except ValidationError as exc:
                err = exc.errors()[0]
                field = ".".join(str(p) for p in err.get("loc", ())) or None
                raise InputError(path, field, err.get("msg", "invalid"), line=n) from None
    return out
