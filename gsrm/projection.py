"""Project a GSRM decomposition back onto the trace it came from.

Why: a decomposition is *generated* text — the model paraphrases, merges and reorders — so
segmentation and role metrics cannot compare it with human step boundaries directly. This
module decides, for every sentence of the input trace, which step covers it and whether it
is meta-reasoning or solving; the metrics then compare that projection with the reference.

**Units and pieces.** The trace is cut into sentences by ``gsrm.text.split_sentences`` (the
same splitter the ``sentences`` backend uses); each unit keeps its character span in the trace.
The alignment itself runs on *pieces*: sentences further cut at run-on joins
(``gsrm.text.run_on_cuts``), where a word with no capital letters (ending in a lower-case
letter, a digit, ``%``, ``)`` or ``]``) is followed by a capitalised word — the place a full
stop or a line break went missing ("... = 16 bars in each box Martha has 56 ..."). Why: a
generated step can separate two ideas that the trace runs together, and a projection on whole
sentences could never place that boundary, however right the step is (GSM8K solutions without
their line breaks are full of such joins). A cut that is not a real boundary costs nothing by
itself: both pieces normally align to the same step. Character boundaries, step spans and the
step that covers a reference span come from the pieces; sentence-level views (sentence
boundaries, roles) give each sentence the step that covers most of its characters (ties: the
earlier step).

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
segmentation that stays a segmentation. A boundary can only fall at a piece start: a human
step that begins mid-sentence at anything but a run-on join (after a comma, say) cannot be
hit exactly, which the character-tolerance metrics show.

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
    >>> run_on = "She sells 16 - 7 = 9 eggs She makes 9 * 2 = $18 in money."  # one sentence
    >>> p = project(s, run_on)
    >>> len(p.units), p.step_of_piece, p.char_boundaries, p.unit_boundaries
    (1, [0, 1], [26], [])
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from gsrm.judges import answer_number, numbers_equal, token_f1
from gsrm.structure import Step, Structure
from gsrm.text import run_on_cuts, split_sentences

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


def piece_units(text: str) -> list[Unit]:
    """The trace's pieces: its sentences cut at run-on joins (see the module docstring).

    >>> [(u.start, u.end) for u in piece_units("Add 2 so 3 Then 5. Done")]
    [(0, 10), (11, 18), (19, 23)]
    """
    return _cut_pieces(sentence_units(text))


def _cut_pieces(units: Sequence[Unit]) -> list[Unit]:
    """The pieces of these sentence units (``piece_units`` without splitting the text again)."""
    pieces: list[Unit] = []
    for unit in units:
        bounds = [0, *run_on_cuts(unit.text), len(unit.text)]
        for a, b in itertools.pairwise(bounds):
            chunk = unit.text[a:b].rstrip()
            pieces.append(Unit(unit.start + a, unit.start + a + len(chunk), chunk))
    return pieces


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
    """Where each step of a decomposition lies in the trace, piece by piece and per sentence."""

    units: list[Unit]  # sentences
    step_of_unit: list[int | None]  # the step covering most of each sentence; None: no steps
    roles: list[str]  # meta / solve / other per sentence
    n_steps: int
    pieces: list[Unit] = field(default_factory=list)  # what the alignment ran on
    step_of_piece: list[int | None] = field(default_factory=list)

    @property
    def unit_boundaries(self) -> list[int]:
        """Units at which a new (non-first) step starts."""
        return [u for u in range(1, len(self.units))
                if self.step_of_unit[u] != self.step_of_unit[u - 1]]

    @property
    def char_boundaries(self) -> list[int]:
        """Character offsets at which a new (non-first) step starts (piece starts)."""
        return [self.pieces[k].start for k in range(1, len(self.pieces))
                if self.step_of_piece[k] != self.step_of_piece[k - 1]]

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

    def step_pieces(self, step: int) -> list[int]:
        """Indices of the pieces step ``step`` covers (may be empty)."""
        return [k for k, s in enumerate(self.step_of_piece) if s == step]

    def step_span(self, step: int) -> tuple[int, int] | None:
        """Character span from the step's first to its last piece, or None if it has none."""
        ks = self.step_pieces(step)
        if not ks:
            return None
        return self.pieces[ks[0]].start, self.pieces[ks[-1]].end

    def covered_steps(self) -> int:
        """How many steps cover at least one piece."""
        return len({s for s in self.step_of_piece if s is not None})


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


def has_spans(structure: Structure) -> bool:
    """True when every step carries its span (the two-stage decomposition's output)."""
    return bool(structure.steps) and all(st.span is not None for st in structure.steps)


def _span_pieces(units: Sequence[Unit], structure: Structure, reasoning: str
                 ) -> tuple[list[Unit], list[int]]:
    """Pieces cut at every span start (so each lies in one span) and the step of each."""
    cuts = sorted({st.span[0] for st in structure.steps if st.span is not None})
    pieces: list[Unit] = []
    for unit in _cut_pieces(units):
        bounds = [unit.start, *(c for c in cuts if unit.start < c < unit.end), unit.end]
        for a, b in itertools.pairwise(bounds):
            chunk = reasoning[a:b].rstrip()
            if chunk.strip():
                lead = len(chunk) - len(chunk.lstrip())
                pieces.append(Unit(a + lead, a + len(chunk), chunk.strip()))
    steps: list[int] = []
    for piece in pieces:
        owner = 0
        for i, st in enumerate(structure.steps):
            if st.span is not None and st.span[0] <= piece.start:
                owner = i
        steps.append(owner)
    return pieces, steps


def project(structure: Structure, reasoning: str, switch_penalty: float = SWITCH_PENALTY,
            other_floor: float = OTHER_FLOOR) -> Projection:
    """Project ``structure``'s steps onto ``reasoning`` (see the module docstring for the rules).

    Steps that carry spans are placed by their spans, not by alignment: the segmenter's
    boundaries are scored as they are.
    """
    units = sentence_units(reasoning)
    pieces = _cut_pieces(units)
    if not structure.steps or not units:
        return Projection(units, [None] * len(units), ["other"] * len(units),
                          structure.n_steps, pieces, [None] * len(pieces))
    if has_spans(structure):
        pieces, path = _span_pieces(units, structure, reasoning)
    else:
        path = monotone_alignment(similarity_matrix(pieces, structure), switch_penalty)
    per_unit = _majority_steps(units, pieces, path)
    roles: list[str] = []
    for u, i in zip(units, per_unit):
        m, q = step_similarity(u.text, structure.steps[i])
        if max(m, q) < other_floor:
            roles.append("other")
        elif m > q:
            roles.append("meta")
        else:
            roles.append("solve")
    return Projection(units, list(per_unit), roles, structure.n_steps, pieces, list(path))


def _majority_steps(units: Sequence[Unit], pieces: Sequence[Unit], path: Sequence[int]
                    ) -> list[int]:
    """Each sentence's step: the one whose pieces cover most of its characters (ties: earlier)."""
    out: list[int] = []
    k = 0
    for u in units:
        chars: dict[int, int] = {}
        while k < len(pieces) and pieces[k].start < u.end:
            chars[path[k]] = chars.get(path[k], 0) + pieces[k].end - pieces[k].start
            k += 1
        out.append(min(chars, key=lambda s: (-chars[s], s)))
    return out


def assign_spans(structure: Structure, reasoning: str) -> Structure:
    """A copy of ``structure`` whose steps carry spans found by the alignment above.

    Why: the single-pass decomposition paraphrases its steps, so where each lies in the trace
    is found by projecting it; its spans are then the same contract as the segmenter's (in
    order, not overlapping, covering every non-space character). A step the alignment gives
    no text keeps ``span=None`` and the structure says so in its warnings.
    """
    from gsrm.text import spans_from_starts

    out = structure.model_copy(deep=True)
    if not out.steps or not reasoning.strip():
        return out
    proj = project(out, reasoning)
    starts: list[tuple[int, int]] = []  # (char offset, step) where each covered step begins
    for k, piece in enumerate(proj.pieces):
        step = proj.step_of_piece[k]
        if step is not None and (not starts or starts[-1][1] != step):
            starts.append((piece.start, step))
    spans = spans_from_starts(reasoning, [c for c, _ in starts[1:]])
    for st in out.steps:
        st.span = None
    for (_, step), span in zip(starts, spans, strict=True):
        out.steps[step].span = span
    missing = [i + 1 for i, st in enumerate(out.steps) if st.span is None]
    if missing:
        out.warnings.append(f"step(s) {missing} match no text of the trace (no span)")
    return out

