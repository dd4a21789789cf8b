"""``reward-sanity``: invariants any structural reward must satisfy, on real teacher traces.

Data: GSM8K held-out solutions (``gsm8k/test.jsonl`` items >= 1000, calculator notes removed,
one step a line, ``#### N`` dropped), problems with at least three steps; with ``--split
dev`` (what rules are chosen on), the ``gsm8k/train.jsonl`` solutions whose problem falls in
the dev split (``eval.splits.split_of``, source ``gsm8k``), so a choice made on dev never
reads a test item. For each teacher T
with n steps, students are built from T's own lines (deterministically from ``--seed`` and
the item id):

- ``self``: T itself — must score the maximum (normalized reward 1) and no less than any
  other student;
- ``shuffled``: T's steps in another order; ``truncated``: T's first n // 2 steps;
  ``replaced``: one step (chosen at random) replaced by a step of another problem — each
  must score lower than ``self``;
- ``prefix j``: T's first j steps followed by n - j steps of other problems, for j = 0,
  ceil(n / 2) and n (three points keep the model systems' decoding cost at six students per
  teacher; ``prefix_points`` takes more) — the reward must not decrease as j grows.

"Another problem" is the next held-out item in file order (then the one after, as needed),
so the replacement lines are real GSM8K steps about a different story.

Metrics per (system, judge): ``self_max``, ``lower_shuffled``, ``lower_truncated``,
``lower_replaced`` (shares of items), ``rank_acc`` and ``auc`` of ``self`` against the three
perturbations, ``prefix_monotone`` (share of items whose reward never decreases with j) and
``prefix_spearman`` (mean rank correlation of j and the reward, where defined).
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping, Sequence
from itertools import pairwise
from typing import Any

from pydantic import BaseModel

from eval.metrics import mean, ranking_accuracy, roc_auc, spearman
from eval.tasks.base import (
    DataMissing,
    Loaded,
    ResultRow,
    Task,
    TaskContext,
    TaskOutput,
    read_jsonl,
    require_file,
    take,
    validate_row,
)
from gsrm.align import score_structures
from gsrm.calibrate import CALIBRATION_ITEMS, strip_calculator
from gsrm.judges import Judge
from gsrm.structure import Structure

GSM8K_TEST = "gsm8k/test.jsonl"
GSM8K_TRAIN = "gsm8k/train.jsonl"
"""Where the dev (and train) split's teachers come from, by problem (``eval.splits``)."""
MIN_STEPS = 3
PERTURBATIONS = ("shuffled", "truncated", "replaced")
_EPS = 1e-9


class _Row(BaseModel):
    question: str
    answer: str


class SanityItem(BaseModel):
    """A teacher trace (one step a line) and the foreign lines used to perturb it."""

    id: str
    problem: str
    steps: list[str]
    foreign: list[str]


def solution_lines(answer: str) -> list[str]:
    """GSM8K solution steps: non-blank lines without calculator notes and the ``####`` line.

    >>> solution_lines("He has 2+3=<<2+3=5>>5.\\n\\n#### 5")
    ['He has 2+3=5.']
    """
    out = []
    for line in answer.splitlines():
        if line.strip().startswith("####"):
            continue
        clean = strip_calculator(line)
        if clean:
            out.append(clean)
    return out


def load_sanity(path: Any, limit: int | None = None, split: str = "test",
                ) -> Loaded[SanityItem]:
    """GSM8K teachers with >= 3 steps; foreign lines come from the following items.
    ``test``: ``path`` is ``gsm8k/test.jsonl`` and its held-out items (index >= 1000) are
    read; ``dev`` (or ``train``): ``path`` is ``gsm8k/train.jsonl`` and the items whose
    problem falls in that split are."""
    from eval.splits import split_of

    problems: list[str] = []
    pool: list[tuple[str, str, list[str]]] = []
    for n, obj in read_jsonl(path, problems):
        index = n - 1
        if split == "test" and index < CALIBRATION_ITEMS:
            continue
        row = validate_row(_Row, obj, f"{path}:{n}", problems)
        if row is None:
            continue
        if split != "test" and split_of(row.question, "gsm8k") != split:
            continue
        lines = solution_lines(row.answer)
        if not lines:
            problems.append(f"{path}:{n}: no solution lines; skipped")
            continue
        pool.append((f"gsm8k-{'test' if split == 'test' else 'train'}-{index}", row.question,
                     lines))
    items: list[SanityItem] = []
    for k, (iid, question, lines) in enumerate(pool):
        if len(lines) < MIN_STEPS or len(pool) < 2:
            continue
        foreign: list[str] = []
        j = k
        while len(foreign) < len(lines):
            j = (j + 1) % len(pool)
            if j == k:
                break
            foreign.extend(pool[j][2])
        items.append(SanityItem(id=iid, problem=question, steps=lines,
                                foreign=foreign[: len(lines)]))
    return Loaded(take(items, limit), problems, len(items))


def prefix_points(n: int, max_points: int = 3) -> list[int]:
    """Values of j (prefix length) to test: 0..n when that is few enough, else evenly spaced
    (rounding up), always including 0 and n.

    >>> prefix_points(1), prefix_points(4), prefix_points(5), prefix_points(8, max_points=5)
    ([0, 1], [0, 2, 4], [0, 3, 5], [0, 2, 4, 6, 8])
    """
    if n + 1 <= max_points:
        return list(range(n + 1))
    return sorted({math.ceil(t * n / (max_points - 1)) for t in range(max_points)})


def variants(item: SanityItem, seed: int) -> dict[str, list[str]]:
    """The students of one teacher, as lists of lines (see the module docstring)."""
    rng = random.Random(f"{seed}:{item.id}")  # str seeds are stable across processes
    n = len(item.steps)
    perm = list(range(n))
    for _ in range(20):
        rng.shuffle(perm)
        if perm != list(range(n)):
            break
    else:
        perm = perm[::-1]
    r = rng.randrange(n)
    out: dict[str, list[str]] = {
        "self": list(item.steps),
        "shuffled": [item.steps[i] for i in perm],
        "truncated": item.steps[: n // 2],
        "replaced": [item.foreign[i] if i == r else s for i, s in enumerate(item.steps)],
    }
    for j in prefix_points(n):
        if j < n:
            out[f"prefix {j}"] = item.steps[:j] + item.foreign[j:n]
    return out


class RewardSanity(Task[SanityItem]):
    name = "reward-sanity"
    kind = "reward"
    description = ("reward invariants on GSM8K held-out teachers (dev: GSM8K train problems "
                   "of the dev split): self is maximal; shuffled, "
                   "truncated, one-step-replaced score lower; reward grows with the prefix")
    max_new_tokens = 320

    def load(self, ctx: TaskContext) -> Loaded[SanityItem]:
        if ctx.split == "test":
            path = require_file(ctx.data_root / GSM8K_TEST, "GSM8K test file")
        else:
            path = require_file(ctx.data_root / GSM8K_TRAIN, "GSM8K train file")
        loaded = load_sanity(path, ctx.limit, ctx.split)
        if not loaded.items and not loaded.problems:
            raise DataMissing(f"no {ctx.split} items with >= {MIN_STEPS} steps in {path}")
        return loaded

    def _plan(self, items: Sequence[SanityItem], seed: int) -> list[dict[str, list[str]]]:
        return [variants(it, seed) for it in items]

    def requests(self, items: Sequence[SanityItem], ctx: TaskContext) -> list[tuple[str, str]]:
        return [(it.problem, "\n".join(lines))
                for it, plan in zip(items, self._plan(items, ctx.seed))
                for lines in plan.values()]

    def evaluate(self, items: Sequence[SanityItem], structures: Sequence[Structure],
                 system: str, judges: Mapping[str, Judge], ctx: TaskContext) -> TaskOutput:
        plans = self._plan(items, ctx.seed)
        pairs: list[tuple[Structure, Structure]] = []
        names: list[tuple[int, str]] = []
        pos = 0
        for k, plan in enumerate(plans):
            teacher = structures[pos]  # "self" comes first in every plan
            for name in plan:
                pairs.append((teacher, structures[pos]))
                names.append((k, name))
                pos += 1
        if pos != len(structures):
            raise ValueError(f"expected {pos} structures, got {len(structures)}")
        rows: list[ResultRow] = []
        details: list[dict[str, Any]] = []
        for jname, judge in judges.items():
            scored = score_structures(pairs, judge, mode="paper")
            per_item: list[dict[str, float]] = [{} for _ in items]
            for (k, name), res in zip(names, scored):
                per_item[k][name] = res.normalized_reward
            self_max, lower = [], {p: [] for p in PERTURBATIONS}
            mono, rho = [], []
            aligned_pairs, perturbed_pairs = [], []
            for it, rw in zip(items, per_item):
                s = rw["self"]
                others = [v for name, v in rw.items() if name != "self"]
                self_max.append(float(abs(s - 1.0) < _EPS and all(s >= v - _EPS for v in others)))
                for p in PERTURBATIONS:
                    lower[p].append(float(rw[p] < s - _EPS))
                    aligned_pairs.append(s)
                    perturbed_pairs.append(rw[p])
                js = prefix_points(len(it.steps))
                curve = [rw["self"] if j == len(it.steps) else rw[f"prefix {j}"] for j in js]
                mono.append(float(all(b >= a - _EPS for a, b in pairwise(curve))))
                rho.append(spearman([float(j) for j in js], curve))
                details.append({"id": it.id, "judge": jname, **rw})
            metrics: dict[str, Any] = {
                "n": len(items),
                "self_max": mean(self_max),
                **{f"lower_{p}": mean(v) for p, v in lower.items()},
                "rank_acc": ranking_accuracy(aligned_pairs, perturbed_pairs) if items else None,
                "auc": roc_auc([rw["self"] for rw in per_item],
                               [rw[p] for rw in per_item for p in PERTURBATIONS]),
                "prefix_monotone": mean(mono),
                "prefix_spearman": mean(rho),
            }
            rows.append(ResultRow(
                system=system, judge=jname, metrics=metrics,
                distributions={"aligned": [rw["self"] for rw in per_item],
                               "perturbed": [rw[p] for rw in per_item for p in PERTURBATIONS]}))
        return TaskOutput(rows=rows, details=details)
