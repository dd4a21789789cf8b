"""Project a GSRM decomposition back onto the trace it came from.

Why: a decomposition is *generated* text — the model paraphrases, merges and reorders — so
segmentation and role metrics cannot compare it with human step boundaries directly. This
module decides, for every sentence of the input trace, which step covers it and whether it
is meta-reasoning or solving; the metrics then compare that projection with the reference.

**Units.** The trace is cut into sentences by ``gsrm.backends.split_sentences`` (the same
splitter the ``sentences`` backend uses); each unit keeps its character span in the trace.
Everything below works on units, so a step covers whole sentences.

**Similarity** of a sentence s to one part p (meta, sub-problem or answer) of a step:
1.0 if s occurs verbatim in p (case and runs of whitespace ignored: rule-based systems and
models that copy text are projected exactly), else the content-token F1 of
``gsrm.judges.token_f1`` (the lexical judge's measure, so numbers and content words anchor a
paraphrase); for the answer, also ``NUMBER_MATCH`` (0.9: strong, but below a verbatim copy)
when s states the same number as the answer (the value after its last "=", as the judges
read answers). The similarity of s to a step is the
maximum over its three parts.

**Alignment.** Each sentence is assigned to exactly one step, with step order preserved
(the assignment never goes back to an earlier step), maximising the total similarity: a
monotone alignment computed by dynamic programming in O(units x steps). A tiny penalty per
change of step makes sentences that match nothing (fillers, "Let me think.") stay with the
step before them (between equally good paths, the one that changes step later wins), and
leading ones with the first step; remaining exact ties go to the earlier step. A step may
cover no sentence (an invented or out-of-order step), and the order constraint means a step
the model moved earlier or later loses its sentences to its neighbours — the price of a
segmentation that stays a segmentation. A boundary can only fall at a sentence start: a
human step that begins mid-sentence (GSM8K lines often lack a full stop, so two joined lines
read as one sentence) cannot be hit exactly, which the character-tolerance metrics show.

**Roles.** Within its step, a sentence is ``meta`` when it is more similar to the step's
meta-reasoning than to its sub-problem and answer, ``solve`` otherwise (ties: ``solve``,
the majority role), and ``other`` when it is similar to none of the three (best similarity
below ``other_floor``, default 0.1) or when the decomposition has no steps.

Example::

    >>> from gsrm.structure import Step, Structure
    >>> s = Structure(steps=[
    ...     Step(meta="Start with the eggs she sells.", subproblem="How many eggs does she sell?",
    ...          answer="9"),
    ...     Step(meta="Then the money she makes.", subproblem="How much money does she make?",
    ...          answer="$18")])
    >>> p = project(s, "She sells 16 - 7 = 9 eggs. She makes 9 * 2 = $18 in money.")
    >>> p.step_of_unit, p.unit_boundaries, p.char_boundaries, p.step_span(1)
    ([0, 1], [1], [27], (27, 58))
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from gsrm.backends import split_sentences
from gsrm.judges import answer_number, numbers_equal, token_f1
from gsrm.structure import Step, Structure

SWITCH_PENALTY = 1e-6
OTHER_FLOOR = 0.1
NUMBER_MATCH = 0.9
_WS = re.compile(r"\s+")


@dataclass(frozen=True)
class Unit:
    """One sentence of the trace and its character span ``text[start:end]``."""

    start: int
    end: int
    text: str


def sentence_units(text: str) -> list[Unit]:
    """The trace's sentences (``split_sentences``) with their character spans.

    >>> [(u.start, u.end) for u in sentence_units("Add 2. Then 3.\\nDone")]
    [(0, 6), (7, 14), (15, 19)]
    """
    units: list[Unit] = []
    cursor = 0
    for sent in split_sentences(text):
        start = text.find(sent, cursor)
        if start < 0:  # split_sentences only strips, so this cannot happen; fail loudly if it does
            raise ValueError(f"sentence not found in its own text: {sent[:40]!r}")
        units.append(Unit(start, start + len(sent), sent))
        cursor = start + len(sent)
    return units


def _norm(text: str) -> str:
    return _WS.sub(" ", text.lower()).strip()


def part_similarity(sentence: str, part: str, numeric: bool = False) -> float:
    """1.0 if ``sentence`` occurs verbatim in ``part`` (case/whitespace-insensitive), else token F1.

    ``numeric`` (used for answers): at least ``NUMBER_MATCH`` when both state the same number
    by ``gsrm.judges.answer_number`` (the value after the last "=", or the only number) — a
    one-token answer such as "9" is otherwise drowned in a long sentence's F1.

    >>> part_similarity("So it is 5.", "first add. so  it is 5. done"), part_similarity("x", "")
    (1.0, 0.0)
    >>> part_similarity("That leaves 16 - 7 = 9 eggs.", "9 eggs", numeric=True)
    0.9
    """
    s, p = _norm(sentence), _norm(part)
    if not s or not p:
        return 0.0
    if s in p:
        return 1.0
    if numeric:
        a, b = answer_number(sentence), answer_number(part)
        if a is not None and b is not None and numbers_equal(a, b):
            return max(NUMBER_MATCH, token_f1(sentence, part))
    return token_f1(sentence, part)


def step_similarity(sentence: str, step: Step) -> tuple[float, float]:
    """(similarity to the meta-reasoning, to the sub-problem or answer, whichever is higher)."""
    meta = part_similarity(sentence, step.meta)
    solve = max(part_similarity(sentence, step.subproblem),
                part_similarity(sentence, step.answer, numeric=True))
    return meta, solve


@dataclass(frozen=True)
class Projection:
    """Where each step of a decomposition lies in the trace, sentence by sentence."""

    units: list[Unit]
    step_of_unit: list[int | None]  # the step covering each unit; None when there are no steps
    roles: list[str]  # meta / solve / other per unit
    n_steps: int

    @property
    def unit_boundaries(self) -> list[int]:
        """Units at which a new (non-first) step starts."""
        return [u for u in range(1, len(self.units))
                if self.step_of_unit[u] != self.step_of_unit[u - 1]]

    @property
    def char_boundaries(self) -> list[int]:
        """Character offsets at which a new (non-first) step starts."""
        return [self.units[u].start for u in self.unit_boundaries]

    @property
    def role_unit_boundaries(self) -> list[int]:
        """Units at which the step *or the role* changes: segments of one role within a step.

        This is the segmentation to compare with references whose segments each carry one
        role (``annotated-jsonl``): there a step's meta-reasoning and its solving are two
        segments.
        """
        return [u for u in range(1, len(self.units))
                if (self.step_of_unit[u], self.roles[u])
                != (self.step_of_unit[u - 1], self.roles[u - 1])]

    def step_units(self, step: int) -> list[int]:
        """Indices of the units step ``step`` covers (may be empty)."""
        return [u for u, s in enumerate(self.step_of_unit) if s == step]

    def step_span(self, step: int) -> tuple[int, int] | None:
        """Character span from the step's first to its last sentence, or None if it has none."""
        us = self.step_units(step)
        if not us:
            return None
        return self.units[us[0]].start, self.units[us[-1]].end

    def covered_steps(self) -> int:
        """How many steps cover at least one sentence."""
        return len({s for s in self.step_of_unit if s is not None})


def similarity_matrix(units: Sequence[Unit], structure: Structure) -> list[list[float]]:
    """``sim[u][i]``: similarity of unit u to step i (maximum over the step's parts)."""
    return [[max(step_similarity(u.text, st)) for st in structure.steps] for u in units]


def monotone_alignment(sim: Sequence[Sequence[float]], switch_penalty: float = SWITCH_PENALTY
                       ) -> list[int]:
    """Non-decreasing step index per unit maximising total similarity (see module docstring).

    A change of step costs ``switch_penalty``; starting later than the first step costs
    twice that, so leading unmatched units belong to the first step.

    >>> monotone_alignment([[0.0, 0.0], [0.0, 0.9], [0.0, 0.0]])
    [0, 1, 1]
    >>> monotone_alignment([[0.9, 0.1], [0.1, 0.2], [0.8, 0.1]])  # no going back to step 0
    [0, 0, 0]
    """
    n = len(sim)
    if n == 0:
        return []
    m = len(sim[0])
    if m == 0:
        raise ValueError("monotone_alignment needs at least one step")
    prev = [sim[0][i] - (2 * switch_penalty if i else 0.0) for i in range(m)]
    back: list[list[int]] = [[i for i in range(m)]]
    for j in range(1, n):
        cur = [0.0] * m
        ptr = [0] * m
        run_val, run_arg = float("-inf"), -1  # best prev[i'] - penalty over i' < i
        for i in range(m):
            stay = prev[i]
            if run_arg >= 0 and run_val >= stay:  # ties: switch as late as possible
                cur[i], ptr[i] = sim[j][i] + run_val, run_arg
            else:
                cur[i], ptr[i] = sim[j][i] + stay, i
            cand = prev[i] - switch_penalty
            if cand > run_val:  # strict: the earlier step wins a tie
                run_val, run_arg = cand, i
        back.append(ptr)
        prev = cur
    best = max(range(m), key=lambda i: (prev[i], -i))
    path = [best]
    for j in range(n - 1, 0, -1):
        path.append(back[j][path[-1]])
    return path[::-1]


def project(structure: Structure, reasoning: str, switch_penalty: float = SWITCH_PENALTY,
            other_floor: float = OTHER_FLOOR) -> Projection:
    """Project ``structure``'s steps onto ``reasoning`` (see the module docstring for the rules)."""
    units = sentence_units(reasoning)
    if not structure.steps or not units:
        return Projection(units, [None] * len(units), ["other"] * len(units),
                          structure.n_steps)
    sim = similarity_matrix(units, structure)
    path = monotone_alignment(sim, switch_penalty)
    roles: list[str] = []
    for u, i in zip(units, path):
        m, q = step_similarity(u.text, structure.steps[i])
        if max(m, q) < other_floor:
            roles.append("other")
        elif m > q:
            roles.append("meta")
        else:
            roles.append("solve")
    return Projection(units, list(path), roles, structure.n_steps)
