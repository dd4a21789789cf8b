"""``annotated-jsonl``: any external corpus of traces with human step spans and roles.

Format (one JSON object a line, UTF-8)::

    {"id": "ex-1",                      # unique name (string)
     "problem": "...",                  # the problem statement (may be empty)
     "reasoning": "...",                # the trace, given to the system as is
     "steps": [{"start": 0, "end": 57, "role": "meta"}, ...],
     "label": "math"}                   # optional: a free-form tag, reported per label

``steps`` are character spans ``reasoning[start:end]`` (0-based, end exclusive), in order and
not overlapping; text between spans belongs to no step (its role is ``other``). ``role`` is

- ``meta``: meta-reasoning — choosing or announcing what to do next, checking, changing
  course ("First, find the morning sales.", "Wait, the question asks what is left.");
- ``solve``: solving a sub-problem — computing or stating its result;
- ``other``: anything else (restating the problem, filler, the final-answer line).

Each span is one segment of one role, so a step's meta-reasoning and its solving are two
spans. Segmentation F1 is computed against the spans' starts, with the system's segments
taken as runs of one role within one of its steps (``Projection.role_unit_boundaries``),
and role agreement per sentence against the spans' roles. Lines that break these rules are reported
(file, line, field) and skipped. ``eval/data/annotated_sample.jsonl`` is a small sample
written for this project; pass your own with ``--annotated FILE``.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, Field, model_validator

from eval.segmentation import RefSpan
from eval.tasks.base import DataMissing, Loaded, TaskContext, read_jsonl, take, validate_row
from eval.tasks.segtask import SegItem, SegmentationTask

SAMPLE = Path(__file__).resolve().parents[1] / "data" / "annotated_sample.jsonl"


class AnnotatedStep(RefSpan):
    """A human step: its span and (required here) its role."""

    role: str  # type: ignore[assignment]


class AnnotatedRecord(BaseModel):
    """One line of an annotated corpus (see the module docstring)."""

    id: str = Field(min_length=1)
    problem: str = ""
    reasoning: str = Field(min_length=1)
    steps: list[AnnotatedStep] = Field(min_length=1)
    label: str | None = None

    @model_validator(mode="after")
    def _spans_fit(self) -> AnnotatedRecord:
        prev_end = 0
        for k, s in enumerate(self.steps):
            if s.end > len(self.reasoning):
                raise ValueError(f"steps[{k}] ends at {s.end}, past the reasoning's "
                                 f"{len(self.reasoning)} characters")
            if s.start < prev_end:
                raise ValueError(f"steps[{k}] starts at {s.start}, before the previous "
                                 f"step ends ({prev_end}): spans must be ordered, no overlap")
            prev_end = s.end
        return self


def load_annotated(path: Path, limit: int | None = None) -> Loaded[SegItem]:
    """Validated records as segmentation items; duplicate ids and bad lines are reported."""
    problems: list[str] = []
    items: list[SegItem] = []
    seen: set[str] = set()
    for n, obj in read_jsonl(path, problems):
        rec = validate_row(AnnotatedRecord, obj, f"{path}:{n}", problems)
        if rec is None:
            continue
        if rec.id in seen:
            problems.append(f"{path}:{n}: field 'id': duplicate id {rec.id!r}; skipped")
            continue
        seen.add(rec.id)
        spans = [RefSpan(start=s.start, end=s.end, role=s.role) for s in rec.steps]
        items.append(SegItem(id=rec.id, problem=rec.problem, reasoning=rec.reasoning,
                             spans=spans, group=rec.label))
    return Loaded(take(items, limit), problems, len(items))


class AnnotatedJsonl(SegmentationTask):
    name = "annotated-jsonl"
    description = "an annotated corpus (step spans + meta/solve/other roles): segmentation, roles"
    max_new_tokens = 384
    by_role = True

    def load(self, ctx: TaskContext) -> Loaded[SegItem]:
        path = ctx.annotated or SAMPLE
        if not path.is_file():
            raise DataMissing(f"annotated corpus not found: {path}")
        return load_annotated(path, ctx.limit)
