"""Projection of decompositions onto traces, and segmentation scoring on top of it.

Why: segmentation F1 and role agreement are only as right as the projection that maps a
generated (paraphrasing) decomposition back onto the trace; these cases pin down the
alignment rules the module documents — verbatim steps project exactly, paraphrases follow
content words and numbers, order is preserved, unmatched sentences stay with their step.
"""

from __future__ import annotations

import pytest

from eval.segmentation import (
    RefSpan,
    aggregate,
    best_overlap_step,
    evaluate_item,
    ref_char_boundaries,
    snap_to_units,
    spans_from_steps,
    unit_roles,
)
from gsrm.model import GSRM
from gsrm.projection import (
    Unit,
    monotone_alignment,
    part_similarity,
    piece_units,
    project,
    sentence_units,
)
from gsrm.structure import Step, Structure


def steps(*parts: tuple[str, str, str]) -> Structure:
    return Structure(steps=[Step(meta=m, subproblem=s, answer=a) for m, s, a in parts])


# --------------------------------------------------------------------------- units
@pytest.mark.parametrize(
    "text, spans",
    [
        # sentence ends followed by a capital, a digit or a line break
        ("Add 2. Then 3.\nDone", [(0, 6), (7, 14), (15, 19)]),
        # leading/trailing space is not part of a unit
        ("  One.  Two.  ", [(2, 6), (8, 12)]),
        # a decimal point does not end a sentence
        ("It is 2.5 m. So 5 m.", [(0, 12), (13, 20)]),
        ("", []),
    ],
)
def test_sentence_units_keep_offsets(text, spans):
    units = sentence_units(text)
    assert [(u.start, u.end) for u in units] == spans
    assert all(text[u.start:u.end] == u.text for u in units)


@pytest.mark.parametrize(
    "sentence, part, expected",
    [
        ("So it is 5.", "First add. So  it IS 5. Done.", 1.0),  # verbatim, case/space-blind
        # content tokens {janet, sells, 9, eggs} vs {eggs, janet, sell}: 2 shared,
        # P = 2/3, R = 2/4 -> F1 = 4/7 (no stemming: "sells" != "sell")
        ("Janet sells 9 eggs.", "How many eggs does Janet sell?", pytest.approx(4 / 7)),
        ("anything", "", 0.0),  # a missing part matches nothing
        ("", "x", 0.0),
    ],
)
def test_part_similarity(sentence, part, expected):
    assert part_similarity(sentence, part) == expected


@pytest.mark.parametrize(
    "sentence, answer, expected",
    [
        # the value after the last "=" equals the answer's number: a strong anchor (0.9),
        # below a verbatim copy (1.0) so a step that copies the sentence still wins
        ("That leaves 16 - 3 - 4 = 9 eggs.", "9", 0.9),
        ("She makes 9 * 2 = $18.", "$18 per day", 0.9),
        # 9 is only an operand here (the result is 18): back to token F1
        ("She makes 9 * 2 = $18.", "9", pytest.approx(2 * (1 / 4) / (1 + 1 / 4))),
    ],
)
def test_answer_similarity_reads_numbers(sentence, answer, expected):
    assert part_similarity(sentence, answer, numeric=True) == expected


# --------------------------------------------------------------------------- alignment
@pytest.mark.parametrize(
    "sim, path",
    [
        # each unit to its best step when order allows
        ([[0.9, 0.0, 0.0], [0.0, 0.8, 0.0], [0.0, 0.0, 0.7]], [0, 1, 2]),
        # order is preserved: unit 2 prefers step 0 but cannot go back, and staying with
        # step 0 all along loses 0.5 on unit 1 but gains 0.8 on unit 2
        ([[0.9, 0.1], [0.1, 0.6], [0.8, 0.1]], [0, 0, 0]),
        # a unit matching nothing stays with the step before it (no new boundary)
        ([[0.9, 0.0], [0.0, 0.0], [0.0, 0.9]], [0, 0, 1]),
        # leading unmatched units belong to the first step
        ([[0.0, 0.0], [0.0, 0.9]], [0, 1]),
        # a step that matches nothing gets no unit (skipped)
        ([[0.9, 0.0, 0.0], [0.0, 0.0, 0.9]], [0, 2]),
        # all ties: everything in the first step
        ([[0.0, 0.0], [0.0, 0.0]], [0, 0]),
        ([], []),
    ],
)
def test_monotone_alignment(sim, path):
    assert monotone_alignment(sim) == path


def test_monotone_alignment_needs_steps():
    with pytest.raises(ValueError):
        monotone_alignment([[]])


def test_sentences_backend_projects_to_identity():
    # a rule system whose steps are the sentences verbatim projects exactly, roles "solve"
    text = "First count the eggs: 3 * 4 = 12. Then remove 2: 12 - 2 = 10. So 10 eggs remain."
    s = GSRM.from_names(backend="sentences", judge="lexical").decompose("p", text)
    p = project(s, text)
    assert p.step_of_unit == [0, 1, 2]
    assert p.char_boundaries == [text.index("Then"), text.index("So 10")]
    assert p.roles == ["solve", "solve", "solve"]


def test_paraphrased_steps_follow_content_and_numbers():
    text = ("Janet has 16 eggs and eats 3 of them. She bakes with 4 more. "
            "That leaves 16 - 3 - 4 = 9 eggs. She sells each egg for $2, making 9 * 2 = $18.")
    s = steps(
        ("We need the eggs left to sell first.", "How many eggs are left to sell?", "9"),
        ("Knowing the eggs, the money follows.", "How much money does she make?", "$18"),
    )
    p = project(s, text)
    # the first three sentences are about the eggs (the third states the answer 9); the last
    # one states $18, the money step's answer; "She bakes with 4 more." matches nothing and
    # stays with its step
    assert p.step_of_unit == [0, 0, 0, 1]
    assert p.roles == ["solve", "other", "solve", "solve"]
    assert p.step_span(1) == (p.units[3].start, len(text))
    assert p.covered_steps() == 2


def test_roles_meta_solve_other():
    text = "Next I should find the total cost. The total is 3 + 4 = 7. Nice weather today."
    s = steps(("Next I should find the total cost.", "What is the total?", "3 + 4 = 7"))
    p = project(s, text)
    # verbatim in meta -> meta; closest to sub-problem/answer -> solve; similar to nothing
    # -> other (it still belongs to the step: no boundary)
    assert p.roles == ["meta", "solve", "other"]
    assert p.unit_boundaries == []
    assert p.role_unit_boundaries == [1, 2]


def test_empty_decomposition_projects_to_nothing():
    p = project(Structure(steps=[]), "One. Two.")
    assert p.step_of_unit == [None, None]
    assert p.roles == ["other", "other"]
    assert p.unit_boundaries == [] and p.step_span(0) is None


# --------------------------------------------------------------------------- references
def test_spans_from_steps_join_and_offsets():
    text, spans = spans_from_steps(["A b.", "C d", "E."], " ")
    assert text == "A b. C d E."
    assert [(s.start, s.end) for s in spans] == [(0, 4), (5, 8), (9, 11)]
    assert ref_char_boundaries(spans) == [5, 9]


@pytest.mark.parametrize(
    "positions, expected",
    [
        ([6], [1]),  # exactly a sentence start
        ([9], [2]),  # 3 from unit 1's start, 2 from unit 2's: nearest wins
        ([8, 9], [1, 2]),
        ([2], []),  # nearest is sentence 0: not a boundary
        ([3], [1]),  # as far from 0 as from 6: ties go to the later sentence
        ([7, 6], [1]),  # two boundaries snapping together collapse
    ],
)
def test_snap_to_units(positions, expected):
    units = [Unit(0, 5, "a"), Unit(6, 10, "b"), Unit(11, 20, "c")]
    assert snap_to_units(positions, units) == expected


def test_unit_roles_by_largest_overlap():
    units = [Unit(0, 10, "x"), Unit(11, 20, "y"), Unit(21, 30, "z")]
    spans = [RefSpan(start=0, end=14, role="meta"), RefSpan(start=14, end=20, role="solve")]
    # unit 0 all meta; unit 1: 3 chars meta, 6 solve -> solve; unit 2 uncovered -> other
    assert unit_roles(units, spans) == ["meta", "solve", "other"]


def test_refspan_validation():
    with pytest.raises(ValueError, match="greater than start"):
        RefSpan(start=5, end=5)
    with pytest.raises(ValueError, match="not one of"):
        RefSpan(start=0, end=3, role="plan")


def test_evaluate_item_mid_sentence_reference():
    # GSM8K lines often lack a full stop: the second human step starts mid-sentence
    text, spans = spans_from_steps(["It takes 2/2=1 bolt", "So the total is 3 bolts."])
    one = steps((text, text, "3"))  # a system that found one step
    r = evaluate_item(text, spans, one, char_tolerance=5)
    assert r.n_units == 1 and r.char.recall == 0.0
    # in sentence units the reference boundary snaps onto sentence 0 and vanishes
    assert r.unit.f1 == 1.0 and r.segment.f1 == 1.0


def test_evaluate_item_run_on_boundary_is_reachable():
    # the same run-on trace: a system that wrote the two steps places the boundary at the
    # join (a piece start), in characters; sentence units still see one sentence
    text, spans = spans_from_steps(["It takes 2/2=1 bolt", "So the total is 3 bolts."])
    two = steps(("First the bolts.", "How many bolts does it take?", "1 bolt"),
                ("Then the total.", "What is the total?", "3 bolts"))
    r = evaluate_item(text, spans, two, char_tolerance=0)
    assert r.projection.char_boundaries == [text.index("So the")]
    assert (r.char.matched, r.char.n_hyp, r.char.n_ref) == (1, 1, 1)
    # the sentence goes to the step covering most of its characters ("So the total ..." is longer)
    assert r.n_units == 1 and r.projection.step_of_unit == [1]
    assert r.covered_steps == 2


@pytest.mark.parametrize(
    "text, pieces",
    [
        # a capitalised word after a word with no capitals: a missing full stop
        ("Add 2 so 3 Then 5. Done", ["Add 2 so 3", "Then 5.", "Done"]),
        ("Pay $12 So he has $3", ["Pay $12", "So he has $3"]),
        ("It is 40% Then 5 (in all) Next", ["It is 40%", "Then 5 (in all)", "Next"]),
        # names after a capitalised word, all-capital words and digits do not cut
        ("Doctor Jones has 9 and 3 more AND 24 guests", None),
        ("", []),
    ],
)
def test_piece_units(text, pieces):
    got = [u.text for u in piece_units(text)]
    assert got == (pieces if pieces is not None else [text])
    assert all(text[u.start:u.end] == u.text for u in piece_units(text))


def test_evaluate_item_and_aggregate():
    text = "Add 2 and 3. So 5. Double it. So 10. Done."
    spans = [RefSpan(start=0, end=18), RefSpan(start=19, end=36), RefSpan(start=37, end=42)]
    hyp = steps(("Add 2 and 3. So 5.", "Add 2 and 3. So 5.", "5"),
                ("Double it. So 10. Done.", "Double it. So 10. Done.", "10"))
    r = evaluate_item(text, spans, hyp, char_tolerance=0)
    # reference boundaries at chars 19 and 37 (sentences 2 and 4); hypothesis finds 19 only
    assert (r.char.matched, r.char.n_hyp, r.char.n_ref) == (1, 1, 2)
    assert (r.unit.matched, r.unit.n_hyp, r.unit.n_ref) == (1, 1, 2)
    # segments: ref (0,2),(2,4),(4,5); hyp (0,2),(2,5)
    assert (r.segment.matched, r.segment.n_hyp, r.segment.n_ref) == (1, 2, 3)
    agg = aggregate([r, r])
    assert agg["n"] == 2
    assert agg["boundary_f1_char"] == pytest.approx(2 / 3)  # P 1, R 1/2
    assert agg["steps_ref"] == 3 and agg["steps_hyp"] == 2 and agg["step_count_mae"] == 1
    assert "role_accuracy" not in agg  # no roles in the reference


def test_aggregate_roles_when_annotated():
    text, spans = spans_from_steps(["First find x.", "Then x is 2.", "The end."])
    for span, role in zip(spans, ("meta", "solve", "other")):
        span.role = role
    hyp = steps(("First find x.", "Then x is 2.", "2"))
    r = evaluate_item(text, spans, hyp, by_role=True)
    # roles: meta (verbatim in meta), solve (verbatim in sub-problem), other (no overlap)
    assert r.projection.roles == ["meta", "solve", "other"]
    assert r.unit.f1 == 1.0  # role runs within the step reproduce the three spans
    agg = aggregate([r])
    assert agg["role_accuracy"] == 1.0 and agg["role_kappa"] == 1.0
    assert agg["_confusion"] == [[1, 0, 0], [0, 1, 0], [0, 0, 1]]


def test_best_overlap_step():
    text = "One two. Three four. Five six."
    hyp = steps(("One two.", "One two.", "x"), ("Three four. Five six.", "-", "y"))
    p = project(hyp, text)
    assert best_overlap_step(RefSpan(start=0, end=8), p) == 0
    assert best_overlap_step(RefSpan(start=9, end=30), p) == 1
    # a span straddling both steps goes to the one covering more of it
    assert best_overlap_step(RefSpan(start=4, end=20), p) == 1
    assert best_overlap_step(RefSpan(start=0, end=3), project(Structure(), text)) is None
