"""Describe only the student steps the reward reads (``describe_steps="read"``).

Why: the reward (DESIGN.md section 1, ``gsrm.align``) compares student step i with teacher
step i only for i < min(n_teacher, n_student), and once a step's meta-reasoning does not match
the teacher's, every later step scores 0 whatever it says (the gating). A student's steps past
the teacher's count, and those after its first mismatch, are never read: describing them is
the describer's work (nearly all of a reward's time on a CPU) for nothing. An RL trainer
asks only for the reward.

How: every student is segmented (its step count is read: coverage, the number of steps
compared); the first ``READ_FIRST`` steps of every student (at most the teacher's count) are
described in one batch and judged; the students with no mismatch yet get the rest of their
steps up to the teacher's count described in a second batch. Two rounds, not one per step:
the engine is fast per span only in large batches, and each round waits for its batch.

The reward is the one every step described would give: the steps left out are exactly those
the rule does not read, and each judge verdict compares one pair on its own. Up to the engine:
the default int8 OpenVINO engine can describe a span a little differently in another batch
(README, "The CPU engine"), and the rounds are other batches. The student's structure keeps
every step's span; a step not described has empty parts, and a warning says which and why.
Such a structure is not a decomposition, so it is never cached. A describer whose prompt
shows the previous span (``tags-prev``) would get another prompt for the second round's first
span: with it every step is described (``GSRM.reads_only``).

Example::

    >>> first_mismatch([1.0, 0.5, 0.0, 0.0])
    2
    >>> needs_second_round(limit=5, first=2, rewards=[1.0, 0.5, 0.0])
    True
    >>> needs_second_round(limit=5, first=2, rewards=[1.0, 0.0, 0.0])
    False
"""

from __future__ import annotations

from collections.abc import Sequence

from gsrm.align import score_structures
from gsrm.backends import Backend
from gsrm.judges import Judge
from gsrm.segment import Segmenter, Span
from gsrm.structure import Generation, ScoreMode, Step, Structure

DESCRIBE_STEPS: tuple[str, ...] = ("all", "read")
"""``all``: every student step is described (the structure returned is the whole
decomposition); ``read``: only the steps the reward reads (this module)."""
READ_FIRST = 2
"""Steps of every student described in the first round. Speed only, never the reward: a
student whose first or second step mismatches needs nothing more; one that matches gets the
rest of its steps in the second round."""
NOT_READ = "not described: the reward does not read them"
"""Start of the reason in the warning of a structure whose later steps were left out."""


def first_mismatch(rewards: Sequence[float]) -> int | None:
    """Index of the first step scored 0 (its meta-reasoning did not match: every later step
    is 0 too), or None."""
    return next((i for i, r in enumerate(rewards) if r == 0), None)


def needs_second_round(limit: int, first: int, rewards: Sequence[float]) -> bool:
    """Whether a student described up to ``first`` (of ``limit`` steps the reward could read)
    needs its next steps: it has more, and none of its first ones mismatched (``rewards``:
    the per-step rewards of its first ``first`` steps; later entries are not read)."""
    return limit > first and first_mismatch(rewards[:first]) is None


def not_read_warning(described: int, n_steps: int, n_teacher: int,
                     mismatch: int | None) -> str:
    """The warning of a student whose steps from index ``described`` on were left out, after
    its step ``mismatch`` (an index) did not match or past the teacher's ``n_teacher`` steps.

    >>> not_read_warning(2, 5, 6, 0)
    "steps 3-5 not described: the reward does not read them (step 1's meta-reasoning did not match the teacher's)"
    """
    why = (f"step {mismatch + 1}'s meta-reasoning did not match the teacher's"
           if mismatch is not None else f"the teacher has {n_teacher} steps")
    first, last = described + 1, n_steps
    steps = f"step {first}" if first == last else f"steps {first}-{last}"
    return f"{steps} {NOT_READ} ({why})"


def _merged(parts: Sequence[Structure], spans: Sequence[Span], backend: Backend) -> Structure:
    """One structure from the described parts, in order, then the rest of ``spans`` as steps
    with a span only; warnings and token counts of every part."""
    steps = [st for p in parts for st in p.steps]
    steps += [Step(span=s) for s in spans[len(steps):]]
    gens = [p.generation for p in parts if p.generation is not None]
    return Structure(
        steps=steps, warnings=[w for p in parts for w in p.warnings],
        generation=Generation(
            backend=backend.name, model=backend.model_id,
            prompt_tokens=sum(g.prompt_tokens for g in gens),
            completion_tokens=sum(g.completion_tokens for g in gens),
            hit_max_new_tokens=any(g.hit_max_new_tokens for g in gens),
            stopped_in_loop=any(g.stopped_in_loop for g in gens)))


def read_students(backend: Backend, judge: Judge, segmenter: Segmenter,
                  teachers: Sequence[Structure], items: Sequence[tuple[str, str]],
                  max_new_tokens: int | None = None, mode: ScoreMode = "paper",
                  use_coverage: bool = False) -> list[Structure]:
    """Structures of raw student ``(problem, reasoning)`` items (think tags stripped, not
    empty) with the steps their ``teachers`` read described, in two batched rounds."""
    from gsrm.describe import describe_many

    if len(teachers) != len(items):
        raise ValueError(f"{len(teachers)} teachers for {len(items)} students")
    spans = segmenter.segment_many([r for _, r in items])
    limits = [min(t.n_steps, len(s)) for t, s in zip(teachers, spans, strict=True)]
    firsts = [min(READ_FIRST, n) for n in limits]
    first = describe_many(backend, [(p, r, s[:k]) for (p, r), s, k
                                    in zip(items, spans, firsts, strict=True)], max_new_tokens)
    parts = [[st] for st in first]
    scored = score_structures(
        [(t, _merged(ps, s, backend)) for t, ps, s in zip(teachers, parts, spans, strict=True)],
        judge, mode, use_coverage)
    more = [j for j, r in enumerate(scored)
            if needs_second_round(limits[j], firsts[j], r.step_rewards)]
    second = describe_many(backend, [(items[j][0], items[j][1], spans[j][firsts[j]:limits[j]])
                                     for j in more], max_new_tokens,
                           first_steps=[firsts[j] for j in more]) if more else []
    for j, st in zip(more, second, strict=True):
        parts[j].append(st)
    out: list[Structure] = []
    for j, (teacher, ps, s) in enumerate(zip(teachers, parts, spans, strict=True)):
        struct = _merged(ps, s, backend)
        described = sum(p.n_steps for p in ps)
        if described < len(s):
            mismatch = first_mismatch(scored[j].step_rewards[:firsts[j]])
            struct.warnings.append(not_read_warning(described, len(s), teacher.n_steps,
                                                    mismatch))
        out.append(struct)
    return out
