"""``annotated-jsonl``: any external corpus of traces with human step spans and roles.

Format (one JSON object a line, UTF-8)::

    {"id": "ex-1",                      # unique name (string)
     "problem": "...",                  # the problem statement (may be empty)
     "reasoning": "...",                # the trace, given to the system as is
     "steps": [{"start": 0, "end": 57, "role": "meta", "step": 0}, ...],
     "label": "math"}                   # optional: a free-form tag, reported per label

``steps`` are character spans ``reasoning[start:end]`` (0-based, end exclusive), in order and
not overlapping; text between spans belongs to no step (its role is ``other``). ``role`` is

- ``meta``: meta-reasoning — choosing or announcing what to do next, checking, changing
  course ("First, find the morning sales.", "Wait, the question asks what is left.");
- ``solve``: solving a sub-problem — computing or stating its result;
- ``other``: anything else (restating the problem, filler, the final-answer line).

Each span is one segment of one role. ``step`` (optional, an integer) groups spans into
steps: a step's meta-reasoning and its solving are two spans of one step. Without it every
span is a step. Step boundaries and roles are scored separately: segmentation F1 compares the
system's *step* boundaries with the starts of the reference steps (the first span of each
``step`` group, or every span), and role agreement compares, per sentence, the system's
roles with the spans' roles. (Before 2026-11-30 the system's segments were its runs of one
role within a step, which counted a change of role inside a step as a boundary.) Lines that
break these rules are reported (file, line, field) and skipped. ``eval/data/annotated_sample.jsonl`` is a small sample
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
    """A human span: its offsets, (required here) its role, and optionally its step."""

    role: str  # type: ignore[assignment]
    step: int | None = Field(None, description="the step this span belongs to (same = same step)")


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


def step_spans(spans: list[AnnotatedStep]) -> list[RefSpan]:
    """The reference steps: spans merged by ``step`` (every span a step when none has one).

    >>> ss = [AnnotatedStep(start=0, end=5, role="meta", step=0),
    ...       AnnotatedStep(start=6, end=9, role="solve", step=0),
    ...       AnnotatedStep(start=10, end=12, role="meta", step=1)]
    >>> [(s.start, s.end) for s in step_spans(ss)]
    [(0, 9), (10, 12)]
    """
    if all(s.step is None for s in spans):
        return [RefSpan(start=s.start, end=s.end) for s in spans]
    out: list[RefSpan] = []
    last: object = object()
    for s in spans:
        key = s.step if s.step is not None else ("alone", s.start)
        if out and key == last:
            out[-1] = RefSpan(start=out[-1].start, end=s.end)
        else:
            out.append(RefSpan(start=s.start, end=s.end))
        last = key
    return out


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
        role_spans = [RefSpan(start=s.start, end=s.end, role=s.role) for s in rec.steps]
        items.append(SegItem(id=rec.id, problem=rec.problem, reasoning=rec.reasoning,
                             spans=step_spans(rec.steps), role_spans=role_spans,
                             group=rec.label))
    return Loaded(take(items, limit), problems, len(items))


class AnnotatedJsonl(SegmentationTask):
    name = "annotated-jsonl"
    description = "an annotated corpus (step spans + meta/solve/other roles): segmentation, roles"
    max_new_tokens = 1024

    def load(self, ctx: TaskContext) -> Loaded[SegItem]:
        path = ctx.annotated or SAMPLE
        if not path.is_file():
            raise DataMissing(f"annotated corpus not found: {path}")
        return load_annotated(path, ctx.limit)
