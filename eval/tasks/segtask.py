"""The shared shape of the segmentation tasks: a trace, human step spans, one table row.

Why: GSM8K, PRM800K, CHAMP, BIG-Bench Mistake and an annotated corpus differ only in how
their data is read; once each item is a trace with reference spans, evaluating a system is
``eval.segmentation.evaluate_item`` per item and ``aggregate`` over the task.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import BaseModel, Field

from eval.segmentation import ItemResult, RefSpan, aggregate, evaluate_item, spans_from_steps
from eval.tasks.base import ResultRow, Task, TaskContext, TaskOutput
from gsrm.judges import Judge
from gsrm.structure import Structure


class SegItem(BaseModel):
    """One trace to segment, with its human step spans."""

    id: str
    problem: str
    reasoning: str
    spans: list[RefSpan]
    group: str | None = Field(None, description="a sub-corpus name (e.g. a BIG-Bench task)")
    questions: list[str] | None = Field(None, description="human sub-question per step")
    role_spans: list[RefSpan] | None = Field(
        None, description="spans carrying roles, when finer than the steps (annotated-jsonl)")

    @classmethod
    def from_steps(cls, id: str, problem: str, steps: Sequence[str], **kw: Any) -> SegItem:
        """An item whose trace is the steps joined by one space (delimiters removed)."""
        text, spans = spans_from_steps(steps, " ")
        return cls(id=id, problem=problem, reasoning=text, spans=spans, **kw)


class SegmentationTask(Task[SegItem]):
    """Segmentation F1 (and role agreement where spans carry roles) against human steps."""

    kind = "segmentation"
    #: compare role runs within steps, not whole steps (references with one role per span)
    by_role: bool = False

    def requests(self, items: Sequence[SegItem], ctx: TaskContext) -> list[tuple[str, str]]:
        return [(it.problem, it.reasoning) for it in items]

    def extra_metrics(self, items: Sequence[SegItem], structures: Sequence[Structure],
                      results: Sequence[ItemResult]) -> dict[str, Any]:
        """Task-specific metrics added to the row (none by default)."""
        return {}

    def evaluate(self, items: Sequence[SegItem], structures: Sequence[Structure], system: str,
                 judges: Mapping[str, Judge], ctx: TaskContext) -> TaskOutput:
        results = [
            evaluate_item(it.reasoning, it.spans, s, ctx.char_tolerance, ctx.sent_tolerance,
                          by_role=self.by_role, role_spans=it.role_spans)
            for it, s in zip(items, structures, strict=True)
        ]
        metrics = aggregate(results)
        confusion = metrics.pop("_confusion", None)
        # parse-valid: at least one step and every step has all three parts
        metrics["parse_valid"] = sum(
            1.0 for s in structures if s.steps and all(st.is_complete for st in s.steps)
        ) / max(1, len(structures))
        metrics.update(self.extra_metrics(items, structures, results))
        details = [
            {"id": it.id, "group": it.group, "boundary_f1_char": r.char.f1,
             "boundary_f1_sent": r.unit.f1, "segment_f1": r.segment.f1, "pk": r.pk,
             "steps_ref": r.n_ref_steps, "steps_hyp": r.n_hyp_steps, "units": r.n_units}
            for it, r in zip(items, results)
        ]
        return TaskOutput(rows=[ResultRow(system=system, metrics=metrics, confusion=confusion)],
                          details=details)
