"""Threshold calibration: parsing, brief answers, pair construction and threshold choice.

Why: the thresholds chosen here decide every judge verdict of the reward, so the pieces that
turn GSM8K socratic solutions into labelled pairs and pick the threshold must be exactly
right; a pair built from the wrong step or an off-by-one in the sweep would shift them
silently. The pure parts are checked on hand-made inputs with hand-computed answers; one
test runs the real script on 50 calibration items when ../shared/data is present.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import ClassVar

import pytest

from gsrm.calibrate import (
    CALIBRATION_ITEMS,
    SocraticItem,
    SocraticStep,
    StepPair,
    _route,
    aligned_steps,
    brief_answer,
    build_pairs,
    choose_threshold,
    floor2,
    like_for_like,
    load_items,
    load_step_pairs,
    main,
    parse_socratic,
    part_pairs,
    result_answer,
    roc_auc,
    strip_calculator,
    text_step,
)
from gsrm.judges import LexicalJudge, ThresholdJudge

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
SOCRATIC = DATA / "gsm8k" / "test_socratic.jsonl"


# --------------------------------------------------------------------------- parsing
@pytest.mark.parametrize(
    "answer, steps, final",
    [
        # the first GSM8K socratic item: calculator notes go, "**" splits question/sentence
        (
            (
                "How many eggs does Janet sell? ** Janet sells 16 - 3 - 4 = <<16-3-4=9>>9 duck "
                "eggs a day.\nHow much does Janet make at the farmers' market? ** She makes "
                "9 * 2 = $<<9*2=18>>18 every day at the farmer’s market.\n#### 18"
            ),
            [
                ("How many eggs does Janet sell?", "Janet sells 16 - 3 - 4 = 9 duck eggs a day."),
                (
                    "How much does Janet make at the farmers' market?",
                    "She makes 9 * 2 = $18 every day at the farmer’s market.",
                ),
            ],
            "18",
        ),
        # only the first "**" splits; a line without one is skipped, not guessed at
        ("Q? ** a ** b\nno marker here\n#### 7", [("Q?", "a ** b")], "7"),
        # an empty side would be a wrong label: dropped; no "####" line -> final is None
        ("** lonely sentence\nQ? **   \n", [], None),
        # blank lines and surrounding spaces are ignored
        (
            "\n  What is x?  **  x is 2+2=<<2+2=4>>4  \n\n#### 4\n",
            [("What is x?", "x is 2+2=4")],
            "4",
        ),
    ],
)
def test_parse_socratic(answer, steps, final):
    item = parse_socratic(answer)
    assert [(s.question, s.text) for s in item.steps] == steps
    assert item.final == final


def test_strip_calculator_collapses_spaces():
    # removing "<<...>>" must not leave double spaces that would change token counts
    assert strip_calculator("a  <<1+1=2>> 2\tb") == "a 2 b"


# --------------------------------------------------------------------------- brief answers
@pytest.mark.parametrize(
    "text, brief",
    [
        # the example from the protocol: a chained subtraction
        ("Janet sells 16 - 3 - 4 = 9 duck eggs a day.", "Janet sells 9 duck eggs a day."),
        # currency on the result is kept
        ("She makes 9 * 2 = $18 every day.", "She makes $18 every day."),
        # no spaces around the operators and "="
        ("It takes 2/2=1 bolt of white fiber", "It takes 1 bolt of white fiber"),
        # thousands separators and a "$" glued to the result
        ("The cost came out to 80,000+50,000=$130,000", "The cost came out to $130,000"),
        # unit words inside the expression
        ("Together they wash 8 oranges + 4 oranges =12 oranges", "Together they wash 12 oranges"),
        # a unit glued with "/" and a decimal divisor
        ("So: 8 pounds / 0.5 pounds/week = 16 weeks", "So: 16 weeks"),
        # "x" as the multiplication sign, "$" operands
        ("The two adults pay $14 x 2 = $28 for the park.", "The two adults pay $28 for the park."),
        # a leading-dot decimal and an en dash as minus
        ("He swam 20*.6=12 miles, then $400 – $50 = $350.", "He swam 12 miles, then $350."),
        # parentheses and a signed first operand
        ("So (3+4)*2 = 14 and -30/3 = -10 degrees", "So 14 and -10 degrees"),
        # "because" clause: the expression goes, the sentence's own numbers stay
        ("Kelly runs 200 yards because 100 x 2 = 200", "Kelly runs 200 yards because 200"),
        # algebra with letters is not arithmetic: unchanged
        ("We get 50=2*x.", "We get 50=2*x."),
        # no expression at all: unchanged
        ("Mark's initial weight was 100 pounds.", "Mark's initial weight was 100 pounds."),
    ],
)
def test_brief_answer(text, brief):
    assert brief_answer(text) == brief


def test_brief_answer_does_not_touch_words_glued_to_numbers():
    # "B2 + 3 = 5": the operand starts inside a word, so it is not an expression start
    assert brief_answer("Room B2 + 3 = 5") == "Room B2 + 3 = 5"


@pytest.mark.parametrize(
    "text, result",
    [
        # GSM8K: the value after the last "=" with its unit words
        ("Janet sells 16 - 3 - 4 = 9 duck eggs a day.", "9 duck eggs"),
        ("So 10 - 2 = 8 apples.", "8 apples"),
        # a boxed result wins over any "=" inside the formula before it
        ("This gives us $20(k + 1) = \\boxed{80}.$", "80"),
        ("So $x \\in \\boxed{\\left(1, \\frac{3}{4}\\right)}$.", "\\left(1, \\frac{3}{4}\\right)"),
        # "= 20v - 75" is an equation going on, not a result: the short formula is the answer
        ("So we get $-21 - 6v = 20v - 75$.", "$-21 - 6v = 20v - 75$"),
        # no "=": the last sentence's last value with its unit words
        ("Right. So there are $5$ ways to choose four letters.", "$5$ ways"),
        ("We know that x is 15 inches.", "15 inches"),
        ("She has 1,200 dollars left.", "1,200 dollars left"),
        # a number's comma is not a thousands separator when three digits do not follow
        ("So the smallest value is 0, achieved when all are equal.", "0"),
        # two amounts of money are not one formula "$18 and $"
        ("It costs $18 and $20.", "$20"),
        # a digit inside a formula written without $ is not a value
        ("The last step gives a factorization of n^4+4^n.", "The last step gives a factorization of n^4+4^n"),
        # a trailing "where" clause defines a symbol; the result is before it
        ("We know that $a_n = a_1 + (n-1)d$, where $d$ is the common difference.",
         "$a_n = a_1 + (n-1)d$"),
        # a formula too long to be brief is skipped for the value before it
        ("We get $7$ and $\\frac{a^2 + b^2 + c^2 + d^2 + e^2}{a + b + c + d + e}$.", "$7$"),
        # no value at all: the last clause
        ("Then seventh is the sedan, so the oldest is the truck.", "the oldest is the truck"),
        ("I push it; stack: empty", "stack: empty"),
    ],
)
def test_result_answer(text, result):
    assert result_answer(text) == result


# --------------------------------------------------------------------------- pairs
Q1, T1 = "How many eggs does Janet sell?", "Janet sells 16 - 3 - 4 = 9 duck eggs a day."
Q2, T2 = "How much does she make?", "She makes 9 * 2 = $18 every day."
Q3, T3 = "How many crayons?", "She has 3 boxes of 64 crayons so she has 3*64 = 192 crayons"
B1, B3 = "Janet sells 9 duck eggs a day.", "She has 3 boxes of 64 crayons so she has 192 crayons"

TWO = SocraticItem(steps=(SocraticStep(Q1, T1), SocraticStep(Q2, T2)))
ONE = SocraticItem(steps=(SocraticStep(Q3, T3),))
MIXED = SocraticItem(steps=(SocraticStep(Q1, T1), SocraticStep(Q3, T3)))
REPEAT = SocraticItem(steps=(SocraticStep(Q1, T1), SocraticStep(Q1, T1), SocraticStep(Q2, T2)))


@pytest.mark.parametrize(
    "items, kind, positives, negatives",
    [
        # same step -> positive; the other step's sentence for the same question -> negative
        ([TWO], "subproblem", [(Q1, T1), (Q2, T2)], [(Q1, T2), (Q2, T1)]),
        # meta uses the same human pairs (a socratic question is what the step is about)
        ([TWO], "meta", [(Q1, T1), (Q2, T2)], [(Q1, T2), (Q2, T1)]),
        # a one-step problem has no negative from the same problem: skipped entirely
        ([ONE], "subproblem", [], []),
        ([ONE, TWO], "subproblem", [(Q1, T1), (Q2, T2)], [(Q1, T2), (Q2, T1)]),
        # a repeated step is not a different step: no negatives between the copies
        (
            [REPEAT],
            "subproblem",
            [(Q1, T1), (Q1, T1), (Q2, T2)],
            [(Q1, T2), (Q1, T2), (Q2, T1), (Q2, T1)],
        ),
        # answers: (T1, B1) both parse as 9 and (T3, B1) as 192 vs 9 -> decided numerically by
        # judge_many, so left out; B3 keeps two numbers (64, 192), so pairs with it stay
        ([MIXED], "answer", [(T3, B3)], [(T1, B3)]),
        # all of TWO's answer pairs are number-vs-number: nothing for the text threshold
        ([TWO], "answer", [], []),
    ],
)
def test_build_pairs(items, kind, positives, negatives):
    assert build_pairs(items, kind) == (positives, negatives)


def test_build_pairs_drops_identity_positive():
    # a sentence without arithmetic is its own brief; scoring (x, x) says nothing
    plain = "He has 2 cats and 3 dogs."
    item = SocraticItem(steps=(SocraticStep("Pets?", plain), SocraticStep(Q3, T3)))
    pos, neg = build_pairs([item], "answer")
    assert pos == [(T3, B3)]
    assert neg == [(plain, B3), (T3, plain)]


def test_build_pairs_rejects_unknown_kind():
    with pytest.raises(ValueError):
        build_pairs([TWO], "final")  # type: ignore[arg-type]


# --------------------------------------------------------------------------- thresholds
@pytest.mark.parametrize(
    "pos, neg, threshold, bal_acc",
    [
        # sweep by hand: 0.9 -> (1/3+1)/2=.667, 0.7 -> (2/3+1)/2=.833, 0.65 -> .667,
        # 0.6 -> (1+2/3)/2=.833 (ties with 0.7; the lower threshold wins), 0.2 -> .667
        ([0.9, 0.7, 0.6], [0.65, 0.2, 0.1], 0.6, 5 / 6),
        # perfectly separated: the lowest positive is the lowest threshold with accuracy 1
        ([0.9, 0.8], [0.3, 0.2], 0.8, 1.0),
        # a score shared by both classes counts as "yes" for both (score >= threshold):
        # 0.8 -> (1/3+1)/2=.667, 0.5 -> (1+1/2)/2=.75, 0.1 -> .5
        ([0.5, 0.5, 0.8], [0.5, 0.1], 0.5, 0.75),
        # class sizes do not matter to balanced accuracy: 1 positive vs 4 negatives
        ([0.4], [0.5, 0.3, 0.2, 0.1], 0.4, (1 + 3 / 4) / 2),
        # negatives above positives: the best is "everything yes" at the minimum (J = 0)
        ([0.1, 0.2], [0.8, 0.9], 0.1, 0.5),
    ],
)
def test_choose_threshold(pos, neg, threshold, bal_acc):
    c = choose_threshold(pos, neg)
    assert c.threshold == threshold
    assert c.balanced_accuracy == pytest.approx(bal_acc)
    assert (c.tpr + c.tnr) / 2 == pytest.approx(bal_acc)


def test_choose_threshold_needs_both_classes():
    with pytest.raises(ValueError):
        choose_threshold([0.5], [])


@pytest.mark.parametrize(
    "pos, neg, auc",
    [
        ([0.9, 0.5], [0.5, 0.1], 0.875),  # 3 wins + 1 tie (0.5) of 4 pairs
        ([0.9, 0.8], [0.2, 0.1], 1.0),  # separated
        ([0.1], [0.9], 0.0),  # reversed
        ([0.5, 0.5], [0.5], 0.5),  # all tied: chance
    ],
)
def test_roc_auc(pos, neg, auc):
    assert roc_auc(pos, neg) == pytest.approx(auc)


@pytest.mark.parametrize(
    "x, expected",
    [
        (0.266667, 0.26),  # rounding down keeps every score at the raw threshold a match
        (0.7, 0.7),  # 0.7 * 100 = 69.99999...: must not become 0.69
        (0.861887, 0.86),
        (-0.123, -0.13),  # cosine can be negative; still rounded down
    ],
)
def test_floor2(x, expected):
    assert floor2(x) == expected


# --------------------------------------------------------------------------- I/O
def _socratic_line(i: int) -> str:
    return json.dumps({"question": f"q{i}", "answer": f"Q{i}? ** s{i} is 1+1=<<1+1=2>>2\n#### 2"})


def test_load_items_never_reads_held_out(tmp_path):
    # items >= 1000 are the eval split: even a huge --limit stops at 1000
    path = tmp_path / "test_socratic.jsonl"
    path.write_text("\n".join(_socratic_line(i) for i in range(1005)) + "\n", encoding="utf-8")
    items = load_items(path, limit=10**6)
    assert len(items) == CALIBRATION_ITEMS
    assert items[-1].steps[0].question == "Q999?"
    assert len(load_items(path, limit=3)) == 3


def test_main_missing_data_exits_2(tmp_path, capsys):
    assert main(["--data", str(tmp_path / "nope"), "--judges", "lexical",
                 "--protocol", "socratic"]) == 2
    err = capsys.readouterr().err
    assert "test_socratic.jsonl" in err and "--data" in err
    assert main(["--data", str(tmp_path / "nope"), "--judges", "lexical"]) == 2
    err = capsys.readouterr().err
    assert "prm800k_train_" in err and "--data" in err


def test_main_rejects_non_threshold_judge(capsys):
    # the llm judge says yes/no itself; it has no threshold to calibrate
    assert main(["--judges", "llm"]) == 2
    assert "llm" in capsys.readouterr().err


@pytest.mark.skipif(not SOCRATIC.is_file(), reason=f"GSM8K socratic data not found at {SOCRATIC}")
def test_main_on_real_data(capsys):
    rc = main(["--data", str(DATA), "--limit", "50", "--judges", "lexical",
               "--protocol", "socratic"])
    assert rc == 0
    report = json.loads(capsys.readouterr().out)
    assert report["items"] == 50
    assert report["split"] == "test_socratic[0:50]"
    kinds = report["judges"]["lexical"]
    assert set(kinds) == {"meta", "subproblem", "answer"}
    for kind, r in kinds.items():
        assert r["n_pos"] > 0 and r["n_neg"] > 0, kind
        assert 0.0 <= r["threshold"] <= 1.0, kind  # token F1 lives in [0, 1]
        assert r["threshold"] == floor2(r["threshold_raw"]), kind
        assert 0.5 <= r["balanced_accuracy"] <= 1.0, kind
        assert r["auc"] > 0.5, kind  # same-step pairs overlap more than cross-step ones
    # meta and subproblem are built from the same human pairs
    assert kinds["meta"]["n_pos"] == kinds["subproblem"]["n_pos"]


# --------------------------------------------------------------------------- issue 17, row 13
PRMBENCH = DATA / "prmbench"

ALIGN_CASES = [
    # (id, n_original, n_modified, modified_steps, error_steps, after_error, pairs)
    # replacement: step i vs step i; an error step is "different", an untouched one "same"
    ("replace", 4, 4, [2], [2], True, [(1, 1, True), (3, 3, True), (4, 4, True),
                                        (2, 2, False)]),
    # a modified step that is not an error: neither label is certain, left out
    ("replace-unsure", 4, 4, [2, 3], [2], True, [(1, 1, True), (4, 4, True), (2, 2, False)]),
    # insertion: untouched modified steps map onto the original in order; the inserted error
    # step is compared with the original step in its place, as a positional reward does
    ("insert", 3, 4, [3], [3], True, [(1, 1, True), (2, 2, True), (3, 4, True),
                                       (3, 3, False)]),
    # an error inserted past the original's end has no step to be compared with
    ("insert-at-end", 3, 4, [4], [4], True, [(1, 1, True), (2, 2, True), (3, 3, True)]),
    # any other shape: the untouched prefix, and the first error against its original
    ("other", 6, 7, [3, 4, 5, 6], [3, 4, 5], True, [(1, 1, True), (2, 2, True),
                                                     (3, 3, False)]),
    # without after_error, "same" steps after the first error are dropped (they may carry it)
    ("propagating", 4, 4, [2], [2], False, [(1, 1, True), (2, 2, False)]),
    ("propagating-insert", 3, 4, [2], [2], False, [(1, 1, True), (2, 2, False)]),
    # no error at all: every untouched step is "same", whatever after_error says
    ("no-error", 3, 3, [], [], False, [(1, 1, True), (2, 2, True), (3, 3, True)]),
]


@pytest.mark.parametrize("case", ALIGN_CASES, ids=[c[0] for c in ALIGN_CASES])
def test_aligned_steps(case):
    _, n_o, n_m, mod, err, after, expected = case
    assert aligned_steps(n_o, n_m, mod, err, after_error=after) == expected


def test_text_step_builds_parts_like_the_model_free_decomposers():
    # the same parts SentenceBackend and eval.systems' rule systems give a one-text step
    from eval.systems import _chunk_steps

    for text in ("So 2p = 0.58, and p = 0.29.", "Add them up.", "It costs $1,250 in all."):
        assert text_step(text) == _chunk_steps([text])[0]


ROUTE_CASES = [
    # (id, kind, pair, route): how the reward decides a part pair, hence what is fitted on
    ("identical", "meta", ("Add 2 and 3.", "Add  2 and 3."), "settled"),  # never judged
    ("empty-side", "meta", ("Add 2 and 3.", ""), "settled"),  # a mismatch without the judge
    ("text", "meta", ("Add 2 and 3.", "Sum 2 and 3."), "judge"),  # the threshold decides
    ("numbers", "answer", ("5", "7"), "numeric"),  # answers with numbers: compared as numbers
    ("number-vs-text", "answer", ("5", "five"), "judge"),  # one side without: the threshold
]


@pytest.mark.parametrize("case", ROUTE_CASES, ids=[c[0] for c in ROUTE_CASES])
def test_route(case):
    _, kind, pair, route = case
    assert _route(pair, kind) == route


class TableJudge(ThresholdJudge):
    """Scores from a table keyed by the pair; records which pairs it was asked about."""

    name = "table"
    thresholds: ClassVar[dict[str, float]] = {"meta": 0.5, "subproblem": 0.5, "answer": 0.5}

    def __init__(self, table):
        super().__init__()
        self.table, self.asked = table, []

    def scores(self, pairs, kind):
        self.asked += list(pairs)
        return [self.table[p] for p in pairs]


def _sp(a, b, same):
    return StepPair(a, b, same, "test", "t")


def test_like_for_like_fits_on_the_fit_split_and_reports_on_the_other():
    table = {("a", "a1"): 0.9, ("b", "b1"): 0.8, ("c", "c1"): 0.3, ("d", "d1"): 0.2,  # fit
             ("e", "e1"): 0.85, ("f", "f1"): 0.1, ("g", "g1"): 0.75, ("h", "h1"): 0.4}  # report
    fit = [_sp("a", "a1", True), _sp("b", "b1", True), _sp("c", "c1", False),
           _sp("d", "d1", False), _sp("same", "same", True)]  # identical: never asked
    report = [_sp("e", "e1", True), _sp("f", "f1", True), _sp("g", "g1", False),
              _sp("h", "h1", False), _sp("x", "x", True), _sp("y", "y", False)]
    judge = TableJudge(table)
    out = like_for_like(judge, fit, report, kinds=("meta",))["meta"]
    # fitted on the fit split's judged pairs only: 0.8 separates them perfectly
    assert out["threshold"] == 0.8 and out["fit"]["balanced_accuracy"] == 1.0
    assert ("same", "same") not in judge.asked and ("x", "x") not in judge.asked
    r = out["report"]
    # judged report pairs at 0.8: same e (0.85) yes, f (0.1) no; different g (0.75) no, h no
    assert (r["tpr"], r["tnr"], r["judge_balanced_accuracy"]) == (0.5, 1.0, 0.75)
    # the reward's verdicts: x identical -> match (right), y identical -> match (wrong)
    assert (r["verdict_n_pos"], r["verdict_n_neg"]) == (3, 3)
    assert r["verdict_tpr"] == round(2 / 3, 4) and r["verdict_tnr"] == round(2 / 3, 4)
    # the judge's current threshold (0.5) is reported alongside
    assert out["current_threshold"] == 0.5
    assert r["judge_balanced_accuracy_at_current"] == 0.5  # e yes, f no; g yes, h no


def _row(original, modified, mod, err, kind="deception", question="What is 2 + 3?"):
    # the default question is in the train split of eval.splits' prmbench hash
    return json.dumps({"original_question": question,
                       "original_process": [f"{i}. {s}" for i, s in enumerate(original, 1)],
                       "modified_process": [f"{i}. {s}" for i, s in enumerate(modified, 1)],
                       "modified_steps": mod, "error_steps": err, "classification": kind})


def test_load_step_pairs_reads_the_split_it_is_given_and_skips_bad_rows(tmp_path):
    folder = tmp_path / "prmbench"
    folder.mkdir()
    (folder / "prm800k_train_p1_4o_deception.jsonl").write_text("\n".join([
        _row(["Add 2 and 3.", "So 5.", "Double: 10."], ["Add 2 and 3.", "So 6.", "Double: 12."],
             [2], [2]),
        "{not json",  # skipped: a guessed label would be a wrong one
        _row(["A = 1.", "B = 2."], ["A = 1.", "Note A.", "B = 2."], [2], [2], "redundency"),
    ]) + "\n")
    (folder / "prm800k_test_p1_4o_deception.jsonl").write_text(
        _row(["Held out."], ["Held out!"], [1], [1]) + "\n")
    train = load_step_pairs(folder, "prm800k_train_*.jsonl")
    assert [(p.original, p.modified, p.same) for p in train] == [
        ("Add 2 and 3.", "Add 2 and 3.", True), ("So 5.", "So 6.", False),  # numbering gone;
        # "Double: 12." carries the error on: left out
        ("A = 1.", "A = 1.", True), ("B = 2.", "B = 2.", True),  # redundancy: kept after it
        ("B = 2.", "Note A.", False)]
    assert all("test" not in p.where for p in train)
    assert [p.original for p in load_step_pairs(folder, "prm800k_test_*.jsonl")] == ["Held out."]
    # the answer part of a step is its number: "So 5." vs "So 6." are two numbers
    assert part_pairs(train[1:2], "answer") == [("5", "6")]


def test_number_check_routes_near_copies_with_other_numbers_to_a_mismatch() -> None:
    from gsrm.calibrate import StepPair, like_for_like
    from gsrm.judges import LexicalJudge

    # two near-copies that differ in one number and a changed step with no number (different),
    # two rewordings (same): at the shipped lexical threshold (0.26) the score alone matches
    # all five; the number check settles the two near-copies as mismatches
    pairs = [StepPair("So n is 71.5 in all.", "So n is 45 in all.", False, "x", "f:1"),
             StepPair("Then p is 0.29 here.", "Then p is 0.31 here.", False, "x", "f:2"),
             StepPair("Add the parts.", "Subtract the parts instead.", False, "x", "f:3"),
             StepPair("So n is 71.5 in all.", "Thus n is 71.5 in all.", True, "x", "f:4"),
             StepPair("Then p is 0.29 here.", "So p is 0.29 here.", True, "x", "f:5")]
    for numbers, tnr in ((True, 2 / 3), (False, 0.0)):
        rep = like_for_like(LexicalJudge(numbers=numbers), pairs, pairs, kinds=("meta",))
        at_now = rep["meta"]["report"]["verdict_balanced_accuracy_at_current"]
        assert at_now == round((1.0 + tnr) / 2, 4), numbers


def test_main_prmbench_prints_per_part_reports(tmp_path, capsys):
    folder = tmp_path / "prmbench"
    folder.mkdir()
    rows = [_row(["Find the total.", "Add the parts.", "It is 9."],
                 ["Find the total.", "Subtract the parts instead.", "It is 9."], [2], [2]),
            _row(["Start with the eggs.", "Then count.", "So 3."],
                 ["Start with eggs.", "Then count.", "So 3."], [], [])]
    for split in ("train", "test"):
        (folder / f"prm800k_{split}_p1_4o_x.jsonl").write_text("\n".join(rows) + "\n")
    assert main(["--data", str(tmp_path), "--judges", "lexical"]) == 0
    captured = capsys.readouterr()
    report = json.loads(captured.out)
    assert report["protocol"] == "prmbench like-for-like"
    assert report["fit"]["files"] == "prm800k_train_*.jsonl, train split"
    assert report["report"]["files"] == "prm800k_test_*.jsonl"
    parts = report["judges"]["lexical"]
    assert set(parts) == {"meta", "subproblem", "answer"}
    # "same": the step before the first row's error (its last step may carry the error: left
    # out) and the error-free row's three; "different": the first row's error step
    assert (parts["meta"]["report"]["verdict_n_pos"], parts["meta"]["report"]["verdict_n_neg"]) \
        == (4, 1)
    assert "verdict" in captured.err and "lexical" in captured.err  # the table


@pytest.mark.skipif(not PRMBENCH.is_dir(), reason=f"PRMBench data not found at {PRMBENCH}")
def test_lexical_answer_threshold_is_the_like_for_like_fit(capsys):
    # the shipped answer constant is what the protocol fits on the train split of
    # prm800k_train_* (never the test files, nor the dev rows: the default --fit train);
    # meta and sub-problem keep the paraphrase-level thresholds on purpose
    # (gsrm/judges.py, "The defaults"): the fit asks for more than the gate's question
    assert main(["--data", str(DATA), "--judges", "lexical"]) == 0
    parts = json.loads(capsys.readouterr().out)["judges"]["lexical"]
    assert parts["answer"]["threshold"] == LexicalJudge.thresholds["answer"]
    assert parts["meta"]["threshold"] > LexicalJudge.thresholds["meta"]


DEV_QUESTION = "How many eggs?"  # in the dev split of eval.splits' prmbench hash


@pytest.mark.parametrize(("argv", "fit_rows", "report_rows", "fit_files", "report_files"), [
    # the default: fit on the train split's rows, report on the test files
    ([], 1, 1, "prm800k_train_*.jsonl, train split", "prm800k_test_*.jsonl"),
    # where a threshold is chosen: the dev split's rows of the train files
    (["--report", "dev"], 1, 1, "prm800k_train_*.jsonl, train split",
     "prm800k_train_*.jsonl, dev split"),
    # how the shipped thresholds were fitted: every row of the train files
    (["--fit", "all"], 2, 1, "prm800k_train_*.jsonl", "prm800k_test_*.jsonl"),
])
def test_main_prmbench_fits_on_train_and_reports_on_the_split_asked(
        tmp_path, capsys, argv, fit_rows, report_rows, fit_files, report_files):
    folder = tmp_path / "prmbench"
    folder.mkdir()
    train_row = _row(["Add 2 and 3.", "So 5."], ["Add 2 and 3.", "So 6."], [2], [2])
    dev_row = _row(["Count the eggs.", "So 7."], ["Count the eggs.", "So 8."], [2], [2],
                   question=DEV_QUESTION)
    (folder / "prm800k_train_p1_4o_x.jsonl").write_text(train_row + "\n" + dev_row + "\n")
    (folder / "prm800k_test_p1_4o_x.jsonl").write_text(train_row + "\n")
    assert main(["--data", str(tmp_path), "--judges", "lexical", *argv]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["fit"]["files"] == fit_files and report["report"]["files"] == report_files
    # one "same" and one "different" pair per row
    assert sum(report["fit"]["pairs"].values()) == 2 * fit_rows
    assert sum(report["report"]["pairs"].values()) == 2 * report_rows


@pytest.mark.parametrize(("split", "kept"), [(None, 2), ("train", 1), ("dev", 0)])
def test_load_step_pairs_split_filter_needs_the_question(tmp_path, split, kept):
    folder = tmp_path / "prmbench"
    folder.mkdir()
    no_question = json.loads(_row(["A = 1."], ["A = 1."], [], []))
    del no_question["original_question"]
    (folder / "prm800k_train_x.jsonl").write_text(
        _row(["B = 2."], ["B = 2."], [], []) + "\n" + json.dumps(no_question) + "\n")
    # a row whose problem is unknown cannot be placed in a split: left out of any split
    assert len(load_step_pairs(folder, "prm800k_train_*.jsonl", split=split)) == kept
