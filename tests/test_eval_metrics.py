"""Evaluation metrics on hand-computed values.

Why: every number in the evaluation report comes from these functions, and a boundary
matched twice, an off-by-one in the nltk encoding or a kappa on the wrong label set would
shift every table silently. Each case states the values worked out by hand.
"""

from __future__ import annotations

import doctest
import importlib
import math

import pytest

from eval.metrics import (
    METRICS,
    PRF,
    boundary_prf,
    boundary_string,
    default_window,
    get_metric,
    higher_is_better,
    match_boundaries,
    micro,
    pk,
    ranking_accuracy,
    roc_auc,
    role_agreement,
    segment_prf,
    segments_from_boundaries,
    spearman,
    windowdiff,
)


# --------------------------------------------------------------------------- boundaries
@pytest.mark.parametrize(
    "ref, hyp, tol, matched",
    [
        # exact positions only at tolerance 0
        ([10, 20], [10, 21], 0, 1),
        # tolerance 1 lets 21 match 20
        ([10, 20], [10, 21], 1, 2),
        # one hypothesis boundary can match only one reference boundary
        ([10, 11], [10], 5, 1),
        # greedy must not steal: 4 could match 5 or 3, but 3 needs it and 5 has 6
        ([3, 5], [4, 6], 1, 2),
        # nothing within tolerance
        ([100], [10, 50], 10, 0),
        # duplicates collapse (a boundary is a position, not an event)
        ([7, 7], [7], 0, 1),
        # empty sides
        ([], [4], 3, 0),
    ],
)
def test_match_boundaries(ref, hyp, tol, matched):
    assert match_boundaries(ref, hyp, tol) == matched


@pytest.mark.parametrize(
    "ref, hyp, tol, p, r, f",
    [
        # characters, tolerance 2: 12 matches 10, 50 matches nothing: P = R = 1/2
        ([10, 30], [12, 50], 2, 0.5, 0.5, 0.5),
        # sentences, tolerance 0: hypothesis finds 2 of 3 gaps and adds 1: P = 2/3, R = 2/3
        ([1, 3, 5], [1, 3, 4], 0, 2 / 3, 2 / 3, 2 / 3),
        # single-segment reference and hypothesis agree perfectly (vacuous P and R)
        ([], [], 0, 1.0, 1.0, 1.0),
        # hypothesis with no boundaries: P is vacuous 1, R is 0, F1 is 0
        ([4], [], 0, 1.0, 0.0, 0.0),
        # over-segmenting: every reference boundary found, half the hypothesis wrong
        ([2], [1, 2], 0, 0.5, 1.0, 2 / 3),
    ],
)
def test_boundary_prf(ref, hyp, tol, p, r, f):
    got = boundary_prf(ref, hyp, tol)
    assert (got.precision, got.recall) == pytest.approx((p, r))
    assert got.f1 == pytest.approx(f)


def test_micro_pools_counts_not_ratios():
    # doc 1: 1 of 1 hyp right, 1 of 4 ref found; doc 2: 0 of 3 hyp, 0 ref
    # micro P = 1/4, R = 1/4 (a mean of per-doc ratios would give something else)
    total = micro([PRF(1, 1, 4), PRF(0, 3, 0)])
    assert (total.matched, total.n_hyp, total.n_ref) == (1, 4, 4)
    assert total.f1 == pytest.approx(0.25)


def test_negative_tolerance_is_rejected():
    with pytest.raises(ValueError):
        match_boundaries([1], [1], -1)


@pytest.mark.parametrize(
    "ref, hyp, length, matched, n_hyp, n_ref",
    [
        # (0,2) matches; (2,5)/(5,8) vs (2,6)/(6,8) do not
        ([2, 5], [2, 6], 8, 1, 3, 3),
        # identical segmentations: every segment matches
        ([3], [3], 6, 2, 2, 2),
        # one segment each, the whole text
        ([], [], 4, 1, 1, 1),
        # boundaries at 0 or the end are not boundaries
        ([0, 4], [], 4, 1, 1, 1),
    ],
)
def test_segment_prf(ref, hyp, length, matched, n_hyp, n_ref):
    got = segment_prf(ref, hyp, length)
    assert (got.matched, got.n_hyp, got.n_ref) == (matched, n_hyp, n_ref)


def test_segments_from_boundaries_sorts_and_dedups():
    assert segments_from_boundaries([9, 4, 4], 12) == [(0, 4), (4, 9), (9, 12)]


# --------------------------------------------------------------------------- Pk / WindowDiff
@pytest.mark.parametrize(
    "boundaries, n, expected",
    [
        ([1, 3], 4, "1010"),  # a boundary at unit u marks the unit before it
        ([], 3, "000"),
        ([0, 5, 2], 4, "0100"),  # out-of-range boundaries ignored
    ],
)
def test_boundary_string(boundaries, n, expected):
    assert boundary_string(boundaries, n) == expected


@pytest.mark.parametrize(
    "ref, n, k",
    [
        ([4], 8, 2),  # two segments of 4: half of 4
        ([], 10, 5),  # one segment of 10: half of 10
        ([1, 2, 3], 4, 1),  # segments of 1: at least 1
    ],
)
def test_default_window(ref, n, k):
    assert default_window(ref, n) == k


@pytest.mark.parametrize(
    "ref, hyp, n, k, p_k, wd",
    [
        # identical: no error
        ([3], [3], 6, 3, 0.0, 0.0),
        # ref "001000", hyp "000000", k=3: windows 0..3 (4 windows) -> ref has a boundary in
        # windows starting at 0,1,2 -> 3 disagreements out of 4
        ([3], [], 6, 3, 0.75, 0.75),
        # ref "0100", hyp "1100", k=1: windows are single symbols, 1 of 4 differs
        ([2], [1, 2], 4, 1, 0.25, 0.25),
        # ref "01000", hyp "01100", k=2 (4 windows of 2): Pk sees "a boundary" in both at
        # windows 0,1 and differs at 2 ("00" vs "10"): 1/4; WD compares counts: window 1
        # has 1 vs 2 boundaries, window 2 has 0 vs 1: 2/4
        ([2], [2, 3], 5, 2, 0.25, 0.5),
        # a single unit: nothing to get wrong
        ([], [], 1, None, 0.0, 0.0),
    ],
)
def test_pk_windowdiff(ref, hyp, n, k, p_k, wd):
    assert pk(ref, hyp, n, k) == pytest.approx(p_k)
    assert windowdiff(ref, hyp, n, k) == pytest.approx(wd)


# --------------------------------------------------------------------------- roles
def test_role_agreement_hand_computed():
    ref = ["meta", "solve", "solve", "other", "solve"]
    hyp = ["meta", "solve", "meta", "other", "other"]
    r = role_agreement(ref, hyp)
    # 3 of 5 agree
    assert r.accuracy == pytest.approx(0.6)
    # per-label F1: meta P=1/2 R=1 -> 2/3; solve P=1 R=1/3 -> 1/2; other P=1/2 R=1 -> 2/3
    assert r.macro_f1 == pytest.approx((2 / 3 + 1 / 2 + 2 / 3) / 3)
    # kappa: p_o = 0.6; marginals ref (1,3,1)/5, hyp (2,1,2)/5 -> p_e = (2+3+2)/25 = 0.28
    assert r.kappa == pytest.approx((0.6 - 0.28) / (1 - 0.28))
    # rows = reference (meta, solve, other), columns = hypothesis
    assert r.confusion == [[1, 0, 0], [1, 1, 1], [0, 0, 1]]


@pytest.mark.parametrize(
    "ref, hyp, acc, macro, kappa",
    [
        # one identical label on both sides: kappa is undefined, reported as None
        (["solve", "solve"], ["solve", "solve"], 1.0, 1.0, None),
        # constant hypothesis against a varied reference: kappa is exactly 0
        (["meta", "solve"], ["solve", "solve"], 0.5, (0 + 2 / 3) / 2, 0.0),
    ],
)
def test_role_agreement_edge_cases(ref, hyp, acc, macro, kappa):
    r = role_agreement(ref, hyp)
    assert r.accuracy == pytest.approx(acc)
    assert r.macro_f1 == pytest.approx(macro)
    assert r.kappa == (pytest.approx(kappa) if kappa is not None else None)


def test_role_agreement_rejects_bad_input():
    with pytest.raises(ValueError, match="length"):
        role_agreement(["meta"], [])
    with pytest.raises(ValueError, match="unknown role"):
        role_agreement(["plan"], ["meta"])
    assert role_agreement([], []).n == 0


# --------------------------------------------------------------------------- ranking
@pytest.mark.parametrize(
    "aligned, perturbed, expected",
    [
        ([1.0, 1.0, 0.5], [0.5, 1.0, 0.7], 0.5),  # win, tie (1/2), loss -> 1.5 / 3
        ([2.0], [1.0], 1.0),
        ([0.0, 0.0], [0.0, 0.0], 0.5),  # all ties
    ],
)
def test_ranking_accuracy(aligned, perturbed, expected):
    assert ranking_accuracy(aligned, perturbed) == pytest.approx(expected)


def test_ranking_accuracy_needs_pairs():
    with pytest.raises(ValueError):
        ranking_accuracy([1.0], [])
    with pytest.raises(ValueError):
        ranking_accuracy([], [])


@pytest.mark.parametrize(
    "pos, neg, expected",
    [
        # pairs: (.9,.5) win, (.9,.1) win, (.5,.5) tie, (.5,.1) win -> 3.5 / 4
        ([0.9, 0.5], [0.5, 0.1], 0.875),
        ([1.0], [0.0], 1.0),
        ([0.0], [1.0], 0.0),
        ([1.0], [], None),  # one class only: undefined
    ],
)
def test_roc_auc(pos, neg, expected):
    got = roc_auc(pos, neg)
    assert got == (pytest.approx(expected) if expected is not None else None)


@pytest.mark.parametrize(
    "x, y, expected",
    [
        ([0, 1, 2], [0.1, 0.5, 0.9], 1.0),  # perfectly increasing
        ([0, 1, 2], [0.9, 0.5, 0.1], -1.0),
        # ties get average ranks: y ranks (0, 1.5, 1.5) -> rho = sqrt(3)/2
        ([0, 1, 2], [0.0, 0.5, 0.5], math.sqrt(3) / 2),
        ([0, 1, 2], [1.0, 1.0, 1.0], None),  # constant: undefined
        ([0], [1.0], None),  # too short
    ],
)
def test_spearman(x, y, expected):
    got = spearman(x, y)
    assert got == (pytest.approx(expected) if expected is not None else None)


# --------------------------------------------------------------------------- registry
def test_registry_and_directions():
    assert get_metric("pk") is METRICS["pk"] and not METRICS["pk"].higher_is_better
    with pytest.raises(ValueError, match="unknown metric"):
        get_metric("bleu")
    # compare uses the column direction: lower Pk is better, higher F1 is better
    assert not higher_is_better("pk") and not higher_is_better("windowdiff")
    assert higher_is_better("boundary_f1_char") and higher_is_better("rank_acc")


# --------------------------------------------------------------------------- doctests
@pytest.mark.parametrize(
    "module",
    ["eval.metrics", "gsrm.projection", "eval.segmentation", "eval.systems", "eval.cache",
     "eval.tasks", "eval.tasks.base", "eval.tasks.prmbench", "eval.tasks.sanity"],
)
def test_docstring_examples_run(module):
    # the eval package is outside pytest's doctest paths; its examples must still be true
    result = doctest.testmod(importlib.import_module(module), optionflags=doctest.ELLIPSIS)
    assert result.failed == 0


def test_generation_metrics_count_each_stop() -> None:
    """The report's notes count budget hits, repeated-step stops and cut inputs separately."""
    from eval.runner import generation_metrics
    from gsrm.structure import Generation, Structure

    def s(**flags: object) -> Structure:
        return Structure(generation=Generation(backend="transformers", **flags))

    shares, notes = generation_metrics([
        s(hit_max_new_tokens=True), s(stopped_in_loop=True), s(stopped_in_loop=True),
        s(input_truncated=True), s()])
    assert shares == {"no_steps": 1.0, "hit_max_tokens": 1 / 5}
    assert notes == ["5/5 decompositions had no steps",
                     "1/5 generations stopped at max_new_tokens",
                     "2/5 generations stopped at a repeated step",
                     "1/5 inputs were truncated"]
