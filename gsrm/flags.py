"""Named flags for a scored pair whose reward rests on less than the whole input.

Why: a reward computed from a cut trace, a decomposition stopped at the token budget or at a
loop, or a student with no reasoning at all is still a number, and a trainer that sees only
the number cannot tell. The warnings say it in words; these flags say it in a few fixed names
that a trainer can count per batch (``rl_client`` logs ``gsrm/<flag>`` through TRL's
``log_metric``) and the server returns per item (``flags`` in ``/v1/rewards``).

=================  =====================================================================
flag               meaning (either side unless named)
=================  =====================================================================
``truncated``      the input was cut: to ``max_input_tokens`` by the backend, or to the
                   server's limits (``options.truncate``)
``hit_budget``     a decomposition stopped at ``max_new_tokens``
``loop``           a decomposition stopped at a step repeating an earlier one
``empty_student``  the student had no reasoning (scored 0 without a model call)
=================  =====================================================================

Example::

    >>> from gsrm.structure import Generation, Structure
    >>> from gsrm.flags import structure_flags
    >>> sorted(structure_flags(Structure(generation=Generation(backend="x",
    ...     hit_max_new_tokens=True, stopped_in_loop=True))))
    ['hit_budget', 'loop']
"""

from __future__ import annotations

from gsrm.structure import ScoreResult, Structure
from gsrm.validation import EMPTY_REASONING

FLAGS: tuple[str, ...] = ("truncated", "hit_budget", "loop", "empty_student")


def structure_flags(s: Structure) -> set[str]:
    """Flags of one decomposition (``empty_student`` excepted: that one depends on the side)."""
    out: set[str] = set()
    g = s.generation
    if g is not None:
        if g.input_truncated:
            out.add("truncated")
        if g.hit_max_new_tokens:
            out.add("hit_budget")
        if g.stopped_in_loop:
            out.add("loop")
    return out


def result_flags(result: ScoreResult, cut: bool = False) -> list[str]:
    """The flags of a scored pair, in ``FLAGS`` order; ``cut``: a caller cut the input."""
    found = structure_flags(result.teacher) | structure_flags(result.student)
    if cut:
        found.add("truncated")
    if result.student.n_steps == 0 and EMPTY_REASONING in result.student.warnings:
        found.add("empty_student")
    return [f for f in FLAGS if f in found]
