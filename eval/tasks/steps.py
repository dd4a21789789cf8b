"""``prm800k-steps``, ``champ-steps``, ``bbm-steps``: segmentation against human step boundaries.

Each trace is its human steps joined by one space with every line break collapsed (the
delimiters removed), and the reference is the steps' spans.

- PRM800K (``prm800k_phase1/phase1_test*.parquet``, held out from training): rows are
  (problem, prior steps, next step, rating). Per problem, the trace is the chain of the row
  marked ``is_solution`` (its prior steps plus its next step), or, for a problem that has
  none, the longest chain; problems in file order.
- CHAMP (PyPI ``champ-dataset``): the 270 problems' human step-segmented solutions, in
  identifier order.
- BIG-Bench Mistake (``bigbench_mistake/*.jsonl``): the model-written, step-segmented
  chain-of-thought traces of five tasks, interleaved task by task so a ``--limit`` sample
  covers all five.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel

from eval.splits import split_of
from eval.tasks.base import (
    DataMissing,
    Loaded,
    TaskContext,
    interleave,
    one_line,
    read_jsonl,
    require_file,
    take,
    validate_row,
)
from eval.tasks.segtask import SegItem, SegmentationTask

PRM800K_TEST = Path("prm800k_phase1") / "phase1_test.stepwise-critic.parquet"
PRM800K_TRAIN = Path("prm800k_phase1") / "phase1_train_plus.stepwise-critic.parquet"
BBM_DIR = Path("bigbench_mistake")


def _clean_steps(steps: Any) -> list[str] | None:
    """Steps as one-line strings, or None if they are not a list of strings."""
    try:
        seq = list(steps)
    except TypeError:
        return None
    if not all(isinstance(s, str) for s in seq):
        return None
    out = [one_line(s) for s in seq]
    return [s for s in out if s]


def in_split(loaded: Loaded[SegItem], source: str, ctx: TaskContext) -> Loaded[SegItem]:
    """The loaded items of ``ctx.split`` (``eval.splits.split_of`` on the problem), limited."""
    items = [it for it in loaded.items if split_of(it.problem, source) == ctx.split]
    return Loaded(take(items, ctx.limit), loaded.problems, len(items))


# --------------------------------------------------------------------------- PRM800K
def load_prm800k(path: Path, limit: int | None = None) -> Loaded[SegItem]:
    """Per-problem solution chains from the PRM800K phase-1 test parquet file."""
    try:
        import pandas as pd
    except ImportError:
        raise DataMissing("reading parquet needs pandas and pyarrow: "
                          "pip install 'gsrm[eval]'") from None
    df = pd.read_parquet(path)
    needed = {"instruction", "responses", "next_response", "is_solution"}
    missing = needed - set(df.columns)
    if missing:
        raise DataMissing(f"{path}: columns {sorted(missing)} missing")
    problems: list[str] = []
    chains: dict[str, tuple[bool, int, list[str]]] = {}  # problem -> (is_solution, len, steps)
    order: list[str] = []
    for n, row in enumerate(df.itertuples(index=False)):
        where = f"{path}:row {n}"
        problem, nxt = row.instruction, row.next_response
        if not isinstance(problem, str) or not isinstance(nxt, str):
            problems.append(f"{where}: instruction/next_response is not text; skipped")
            continue
        prior = _clean_steps(row.responses)
        if prior is None:
            problems.append(f"{where}: responses is not a list of text; skipped")
            continue
        steps = prior + ([one_line(nxt)] if nxt.strip() else [])
        if problem not in chains:
            order.append(problem)
        cand = (bool(row.is_solution), len(steps), steps)
        best = chains.get(problem)
        if best is None or cand[:2] > best[:2]:  # a solution beats a longer partial chain
            chains[problem] = cand
    items = [SegItem.from_steps(f"prm800k-test-{k}", p, chains[p][2])
             for k, p in enumerate(order) if chains[p][2]]
    return Loaded(take(items, limit), problems, len(items))


class PRM800KSteps(SegmentationTask):
    name = "prm800k-steps"
    description = "PRM800K phase-1 test solutions (human steps), delimiters removed"
    max_new_tokens = 512

    def load(self, ctx: TaskContext) -> Loaded[SegItem]:
        if ctx.split == "test":
            return load_prm800k(require_file(ctx.data_root / PRM800K_TEST,
                                             "PRM800K phase 1 test"), ctx.limit)
        loaded = load_prm800k(require_file(ctx.data_root / PRM800K_TRAIN,
                                           "PRM800K phase 1 train"))
        return in_split(loaded, "prm800k", ctx)


# --------------------------------------------------------------------------- CHAMP
def load_champ(limit: int | None = None) -> Loaded[SegItem]:
    """CHAMP's human step-segmented solutions (``champ-dataset`` from PyPI)."""
    try:
        import champ_dataset
    except ImportError:
        raise DataMissing("champ-dataset is not installed: pip install 'gsrm[eval]'") from None
    ds = champ_dataset.load("v0")
    problems: list[str] = []
    items: list[SegItem] = []
    try:
        from natsort import natsorted
    except ImportError:  # champ-dataset needs it anyway; fall back to plain sorting
        natsorted = sorted  # type: ignore[assignment]
    for pid in natsorted(ds.problems):
        p = ds.problems[pid]
        steps = _clean_steps([s.text for s in (p.solution.steps or [])]) if p.solution else None
        if not isinstance(p.text, str) or not steps:
            problems.append(f"champ {pid}: no problem text or no solution steps; skipped")
            continue
        items.append(SegItem.from_steps(f"champ-{pid}", p.text, steps))
    return Loaded(take(items, limit), problems, len(items))


class CHAMPSteps(SegmentationTask):
    name = "champ-steps"
    description = "CHAMP competition-math human solutions, delimiters removed"
    max_new_tokens = 448

    def load(self, ctx: TaskContext) -> Loaded[SegItem]:
        return in_split(load_champ(), "champ", ctx)


# --------------------------------------------------------------------------- BIG-Bench Mistake
class _BBMRow(BaseModel):
    input: str
    steps: list[str]


def load_bbm(folder: Path, limit: int | None = None) -> Loaded[SegItem]:
    """BIG-Bench Mistake traces, round-robin over its task files (sorted by name)."""
    files = sorted(folder.glob("*.jsonl"))
    if not files:
        raise DataMissing(f"no *.jsonl files in {folder}")
    problems: list[str] = []
    groups: list[list[SegItem]] = []
    for f in files:
        group: list[SegItem] = []
        for n, obj in read_jsonl(f, problems):
            row = validate_row(_BBMRow, obj, f"{f}:{n}", problems)
            if row is None:
                continue
            steps = _clean_steps(row.steps)
            if not steps:
                problems.append(f"{f}:{n}: no steps; skipped")
                continue
            group.append(SegItem.from_steps(f"bbm-{f.stem}-{n}", row.input, steps,
                                            group=f.stem))
        groups.append(group)
    items = interleave(groups)
    return Loaded(take(items, limit), problems, len(items))


class BBMSteps(SegmentationTask):
    name = "bbm-steps"
    description = "BIG-Bench Mistake chain-of-thought steps (5 tasks), delimiters removed"
    max_new_tokens = 512

    def load(self, ctx: TaskContext) -> Loaded[SegItem]:
        folder = ctx.data_root / BBM_DIR
        if not folder.is_dir():
            raise DataMissing(f"data not found: {folder}")
        return in_split(load_bbm(folder), "bbm", ctx)
