"""Segmentation and role evaluation of one decomposition against a human reference.

Why separate from the tasks: every segmentation task (GSM8K, PRM800K, CHAMP, BIG-Bench
Mistake, an annotated corpus) reduces to the same thing — a trace, the character spans of
its human steps (optionally with roles), and a system's ``Structure`` — so the comparison is
written once here, on top of ``gsrm.projection`` and ``eval.metrics``, and the tasks only
load data.

Reference conventions:

- a reference step is a character span ``[start, end)`` of the trace; its boundary is its
  ``start`` (the first step's start is not a boundary);
- in sentence units, a reference boundary is *snapped* to the nearest sentence start (ties:
  the later sentence), because human steps need not end at a sentence end (GSM8K lines often
  lack a full stop); boundaries that snap onto sentence 0 or onto each other collapse. The
  projection's boundaries are sentence starts already, so both sides use the same units;
- a sentence's reference role is the role of the span covering most of its characters,
  ``other`` where no span covers it.

Example::

    >>> from gsrm.structure import Step, Structure
    >>> text = "Add 2 and 3. So 5. Double it. So 10."
    >>> ref = [RefSpan(start=0, end=18), RefSpan(start=19, end=36)]
    >>> hyp = Structure(steps=[Step(meta=t, subproblem=t, answer="x") for t in
    ...                        ("Add 2 and 3. So 5.", "Double it. So 10.")])
    >>> r = evaluate_item(text, ref, hyp)
    >>> r.char.f1, r.unit.f1, r.segment.f1, r.pk
    (1.0, 1.0, 1.0, 0.0)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, Field, model_validator

from eval.metrics import (
    PRF,
    ROLES,
    boundary_prf,
    mean,
    micro,
    pk,
    role_agreement,
    segment_prf,
    windowdiff,
)
from gsrm.projection import Projection, Unit, project
from gsrm.structure import Structure

DEFAULT_CHAR_TOLERANCE = 10
DEFAULT_SENT_TOLERANCE = 0


class RefSpan(BaseModel):
    """One human step: a character span of the trace, with a role when annotated."""

    start: int = Field(ge=0)
    end: int
    role: str | None = None

    @model_validator(mode="after")
    def _ordered(self) -> RefSpan:
        if self.end <= self.start:
            raise ValueError(f"span end {self.end} must be greater than start {self.start}")
        if self.role is not None and self.role not in ROLES:
            raise ValueError(f"role {self.role!r} is not one of {list(ROLES)}")
        return self


def spans_from_steps(steps: Sequence[str], sep: str = " ") -> tuple[str, list[RefSpan]]:
    """Join step texts with ``sep`` into one trace and return it with each step's span.

    Why: the segmentation tasks hand a system the trace *without* its step delimiters (one
    step a line would make a line splitter trivially right), and keep the spans as reference.

    >>> spans_from_steps(["A b.", "C."])
    ('A b. C.', [RefSpan(start=0, end=4, role=None), RefSpan(start=5, end=7, role=None)])
    """
    parts: list[str] = []
    spans: list[RefSpan] = []
    pos = 0
    for k, step in enumerate(steps):
        if k:
            parts.append(sep)
            pos += len(sep)
        parts.append(step)
        spans.append(RefSpan(start=pos, end=pos + len(step)))
        pos += len(step)
    return "".join(parts), spans


def ref_char_boundaries(spans: Sequence[RefSpan]) -> list[int]:
    """Start offsets of every reference step but the first."""
    starts = sorted({s.start for s in spans})
    return starts[1:]


def snap_to_units(positions: Sequence[int], units: Sequence[Unit]) -> list[int]:
    """Sentence boundaries for character boundaries: the nearest sentence start (ties: later).

    >>> us = [Unit(0, 5, "a"), Unit(6, 10, "b"), Unit(11, 20, "c")]
    >>> snap_to_units([6, 9, 2], us)   # 9 is 3 from 6 and 2 from 11; 2 snaps to 0: dropped
    [1, 2]
    """
    if not units:
        return []
    out: set[int] = set()
    for c in positions:
        best = min(range(len(units)), key=lambda u: (abs(units[u].start - c), -u))
        if best > 0:
            out.add(best)
    return sorted(out)


def unit_roles(units: Sequence[Unit], spans: Sequence[RefSpan]) -> list[str]:
    """Each sentence's reference role: the role of the span overlapping it most, else other."""
    roles: list[str] = []
    for u in units:
        best, best_overlap = "other", 0
        for s in spans:
            overlap = min(u.end, s.end) - max(u.start, s.start)
            if overlap > best_overlap and s.role is not None:
                best, best_overlap = s.role, overlap
        roles.append(best)
    return roles


@dataclass
class ItemResult:
    """Segmentation counts and errors for one trace, plus what aggregation needs."""

    char: PRF
    unit: PRF
    segment: PRF
    pk: float
    windowdiff: float
    n_units: int
    n_ref_steps: int
    n_hyp_steps: int
    covered_steps: int
    projection: Projection
    ref_roles: list[str] = field(default_factory=list)


def evaluate_item(text: str, spans: Sequence[RefSpan], structure: Structure,
                  char_tolerance: int = DEFAULT_CHAR_TOLERANCE,
                  sent_tolerance: int = DEFAULT_SENT_TOLERANCE,
                  projection: Projection | None = None, by_role: bool = False,
                  role_spans: Sequence[RefSpan] | None = None) -> ItemResult:
    """Compare ``structure`` (projected onto ``text``) with the reference spans.

    Boundaries are the hypothesis *steps'* boundaries; roles are compared per sentence,
    separately (``role_spans``: the spans that carry the roles, when they are finer than the
    steps). ``by_role`` (kept for comparison with older reports): the hypothesis segments
    are runs of one role within one step (``Projection.role_unit_boundaries``), which counts
    a change of role inside a step as a boundary.
    """
    proj = projection or project(structure, text)
    units = proj.units
    ref_chars = ref_char_boundaries(spans)
    ref_units = snap_to_units(ref_chars, units)
    hyp_units = proj.role_unit_boundaries if by_role else proj.unit_boundaries
    # by role, segments are sentence runs; otherwise the steps' own (piece) boundaries
    hyp_chars = [units[u].start for u in hyp_units] if by_role else proj.char_boundaries
    n = len(units)
    roles_from = list(role_spans) if role_spans is not None else list(spans)
    with_roles = any(s.role is not None for s in roles_from)
    return ItemResult(
        char=boundary_prf(ref_chars, hyp_chars, char_tolerance),
        unit=boundary_prf(ref_units, hyp_units, sent_tolerance),
        segment=segment_prf(ref_units, hyp_units, n),
        pk=pk(ref_units, hyp_units, n),
        windowdiff=windowdiff(ref_units, hyp_units, n),
        n_units=n,
        n_ref_steps=len(spans),
        n_hyp_steps=structure.n_steps,
        covered_steps=proj.covered_steps(),
        projection=proj,
        ref_roles=unit_roles(units, roles_from) if with_roles else [],
    )


def aggregate(results: Sequence[ItemResult]) -> dict[str, Any]:
    """Task-level metrics: micro P/R/F1 over all traces, mean Pk/WD, step counts, roles."""
    if not results:
        return {"n": 0}
    ch = micro(r.char for r in results)
    un = micro(r.unit for r in results)
    sg = micro(r.segment for r in results)
    out: dict[str, Any] = {
        "n": len(results),
        "boundary_f1_char": ch.f1,
        "boundary_p_char": ch.precision,
        "boundary_r_char": ch.recall,
        "boundary_f1_sent": un.f1,
        "boundary_p_sent": un.precision,
        "boundary_r_sent": un.recall,
        "segment_f1": sg.f1,
        "pk": mean(r.pk for r in results),
        "windowdiff": mean(r.windowdiff for r in results),
        "steps_ref": mean(r.n_ref_steps for r in results),
        "steps_hyp": mean(r.n_hyp_steps for r in results),
        "step_count_mae": mean(abs(r.n_hyp_steps - r.n_ref_steps) for r in results),
        "step_count_exact": mean(float(r.n_hyp_steps == r.n_ref_steps) for r in results),
    }
    ref_roles = [x for r in results if r.ref_roles for x in r.ref_roles]
    if ref_roles:
        hyp_roles = [x for r in results if r.ref_roles for x in r.projection.roles]
        ra = role_agreement(ref_roles, hyp_roles)
        out.update(role_accuracy=ra.accuracy, role_macro_f1=ra.macro_f1, role_kappa=ra.kappa)
        out["_confusion"] = ra.confusion
    return out


def best_overlap_step(span: RefSpan, proj: Projection) -> int | None:
    """The hypothesis step whose pieces overlap the reference span most (ties: earlier)."""
    best, best_overlap = None, 0
    totals: dict[int, int] = {}
    for u, step in zip(proj.pieces, proj.step_of_piece):
        if step is None:
            continue
        overlap = min(u.end, span.end) - max(u.start, span.start)
        if overlap > 0:
            totals[step] = totals.get(step, 0) + overlap
    for step in sorted(totals):
        if totals[step] > best_overlap:
            best, best_overlap = step, totals[step]
    return best
