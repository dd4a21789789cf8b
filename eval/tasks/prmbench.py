"""``prmbench-structure``: does the reward prefer the original process to a perturbed one?

Data: PRMBench ``prmbench/prm800k_test_*.jsonl`` (built on PRM800K's test problems; the
training issue never reads them) for ``--split test``; ``--split dev`` (what rules and
thresholds are chosen on) reads the ``prm800k_train_*`` files' rows whose problem falls in
the dev split (``eval.splits.split_of``, source ``prmbench``: a tenth of the problems), so a
choice made on dev never reads a test item. Each row has a human step-segmented
``original_process``, a GPT-4o perturbation of it (``modified_process``, one of eight types:
circular, confidence, counterfactual, deception, domain inconsistency, missing condition,
redundancy, step contradiction) and the 1-based ``error_steps`` of the perturbed version.

Protocol: the teacher is the original process; two students are scored against it, the
original itself (aligned) and the perturbed process. Both are given as text, one step a line
(this task tests the reward, not segmentation; the "1." numbering PRMBench added is removed).
Rows are interleaved type by type, so a ``--limit`` sample covers every type.

Metrics per (system, judge):

- ``rank_acc`` (overall and ``rank_acc.<type>``): share of rows where the aligned student
  scores higher than the perturbed one (ties count a half);
- ``auc``: ROC AUC of the aligned vs perturbed normalized rewards over all rows;
- ``reward_aligned`` / ``reward_perturbed``: mean normalized reward;
- ``first_drop_in_error``: share of rows where the first student step with r_i < 1 lies in a
  step listed in ``error_steps`` (the student's decomposed step is located in the perturbed
  text through the projection; the step of the perturbed process holding its first sentence);
  ``first_drop_exact``: that step is the first error step; ``no_drop``: share of rows where
  no compared step lost reward.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from eval.metrics import mean, ranking_accuracy, roc_auc
from eval.segmentation import spans_from_steps
from eval.tasks.base import (
    DataMissing,
    Loaded,
    ResultRow,
    Task,
    TaskContext,
    TaskOutput,
    interleave,
    read_jsonl,
    take,
    validate_row,
)
from gsrm.align import score_structures
from gsrm.calibrate import strip_numbering  # one rule for the task and the calibration
from gsrm.judges import Judge
from gsrm.projection import project
from gsrm.structure import ScoreResult, Structure

PRMBENCH_DIR = Path("prmbench")
PRMBENCH_GLOB = "prm800k_test_*.jsonl"
PRMBENCH_TRAIN_GLOB = "prm800k_train_*.jsonl"
"""The files the dev (and train) split's rows come from, by problem (``eval.splits``)."""


class _PRMBenchRow(BaseModel):
    idx: str = ""
    original_question: str
    original_process: list[str] = Field(min_length=1)
    modified_process: list[str] = Field(min_length=1)
    error_steps: list[int] = Field(default_factory=list)
    classification: str


class PRMBenchItem(BaseModel):
    """One perturbation: problem, original and perturbed steps, and where the errors are."""

    id: str
    kind: str
    problem: str
    original: list[str]
    modified: list[str]
    error_steps: list[int]

    @property
    def teacher_text(self) -> str:
        return "\n".join(self.original)

    def modified_text_and_spans(self) -> tuple[str, list[Any]]:
        return spans_from_steps(self.modified, "\n")


def load_prmbench(folder: Path, limit: int | None = None, split: str = "test",
                  ) -> Loaded[PRMBenchItem]:
    """Rows of ``split``, grouped by perturbation type and interleaved: every
    ``prm800k_test_*`` row for ``test``; for ``dev`` (or ``train``), the ``prm800k_train_*``
    rows whose problem falls in that split (``eval.splits.split_of``, source ``prmbench``)."""
    from eval.splits import split_of

    glob = PRMBENCH_GLOB if split == "test" else PRMBENCH_TRAIN_GLOB
    files = sorted(folder.glob(glob))
    if not files:
        raise DataMissing(f"no {glob} files in {folder}")
    problems: list[str] = []
    by_kind: dict[str, list[PRMBenchItem]] = {}
    for f in files:
        for n, obj in read_jsonl(f, problems):
            row = validate_row(_PRMBenchRow, obj, f"{f}:{n}", problems)
            if row is None:
                continue
            if split != "test" and split_of(row.original_question, "prmbench") != split:
                continue
            original = [s for s in (strip_numbering(x) for x in row.original_process) if s]
            modified = [s for s in (strip_numbering(x) for x in row.modified_process) if s]
            if not original or not modified:
                problems.append(f"{f}:{n}: empty process after cleaning; skipped")
                continue
            kind = row.classification.strip() or "unknown"
            by_kind.setdefault(kind, []).append(PRMBenchItem(
                id=f"{f.stem}:{row.idx or n}", kind=kind, problem=row.original_question,
                original=original, modified=modified, error_steps=row.error_steps))
    items = interleave([by_kind[k] for k in sorted(by_kind)])
    return Loaded(take(items, limit), problems, len(items))


def first_drop_step(result: ScoreResult) -> int | None:
    """0-based index of the first student step with r_i < 1, or None if none lost reward.

    A student with more steps than the teacher "drops" at its first unmatched extra step.
    """
    for i, r in enumerate(result.step_rewards):
        if r < 1.0:
            return i
    n_cmp = len(result.step_rewards)
    if result.student.n_steps > n_cmp and result.teacher.n_steps > 0:
        return n_cmp
    return None


def locate_step(structure: Structure, text: str, spans: Sequence[Any], step: int) -> int | None:
    """1-based index of the original step holding the first sentence of decomposed ``step``.

    Falls back to the next decomposed step that covers any sentence; None if none does.
    """
    proj = project(structure, text)
    for k in range(step, structure.n_steps):
        span = proj.step_span(k)
        if span is None:
            continue
        start = span[0]
        for j, sp in enumerate(spans, start=1):
            if sp.start <= start < sp.end:
                return j
        return None
    return None


class PRMBenchStructure(Task[PRMBenchItem]):
    name = "prmbench-structure"
    kind = "reward"
    description = ("PRMBench (PRM800K test; dev: a tenth of its train problems): reward of "
                   "the original vs a perturbed process, "
                   "teacher = original; ranking per perturbation type, first-drop location")
    max_new_tokens = 512

    def load(self, ctx: TaskContext) -> Loaded[PRMBenchItem]:
        folder = ctx.data_root / PRMBENCH_DIR
        if not folder.is_dir():
            raise DataMissing(f"data not found: {folder}")
        return load_prmbench(folder, ctx.limit, ctx.split)

    def requests(self, items: Sequence[PRMBenchItem], ctx: TaskContext) -> list[tuple[str, str]]:
        out: list[tuple[str, str]] = []
        for it in items:
            out.append((it.problem, it.teacher_text))
            out.append((it.problem, it.modified_text_and_spans()[0]))
        return out

    def evaluate(self, items: Sequence[PRMBenchItem], structures: Sequence[Structure],
                 system: str, judges: Mapping[str, Judge], ctx: TaskContext) -> TaskOutput:
        teachers = structures[0::2]
        students = structures[1::2]
        rows: list[ResultRow] = []
        details: list[dict[str, Any]] = []
        for jname, judge in judges.items():
            pairs = []
            for t, s in zip(teachers, students):
                pairs.append((t, t))
                pairs.append((t, s))
            scored = score_structures(pairs, judge, mode="paper")
            aligned = [r.normalized_reward for r in scored[0::2]]
            perturbed = [r.normalized_reward for r in scored[1::2]]
            hits, exact, nodrop = [], [], []
            for it, res, s, a in zip(items, scored[1::2], students, aligned):
                drop = first_drop_step(res)
                located = None
                if drop is not None:
                    text, spans = it.modified_text_and_spans()
                    located = locate_step(s, text, spans, drop)
                nodrop.append(float(drop is None))
                hits.append(float(located is not None and located in it.error_steps))
                exact.append(float(located is not None and bool(it.error_steps)
                                   and located == min(it.error_steps)))
                details.append({"id": it.id, "judge": jname, "kind": it.kind, "aligned": a,
                                "perturbed": res.normalized_reward, "first_drop": located,
                                "error_steps": it.error_steps})
            metrics: dict[str, Any] = {
                "n": len(items),
                "rank_acc": ranking_accuracy(aligned, perturbed) if items else None,
                "auc": roc_auc(aligned, perturbed),
                "reward_aligned": mean(aligned),
                "reward_perturbed": mean(perturbed),
                "first_drop_in_error": mean(hits),
                "first_drop_exact": mean(exact),
                "no_drop": mean(nodrop),
            }
            for kind in sorted({it.kind for it in items}):
                idx = [k for k, it in enumerate(items) if it.kind == kind]
                metrics[f"rank_acc.{kind}"] = ranking_accuracy(
                    [aligned[k] for k in idx], [perturbed[k] for k in idx])
            rows.append(ResultRow(system=system, judge=jname, metrics=metrics,
                                  distributions={"aligned": aligned, "perturbed": perturbed}))
        return TaskOutput(rows=rows, details=details)
