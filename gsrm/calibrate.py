"""Choose the per-kind decision thresholds of the threshold judges from human-labelled steps.

Why: the embedding and lexical judges turn a similarity score into a yes/no verdict, and a
threshold picked by eye silently biases every reward (a too-strict ``meta`` threshold zeroes
all later steps through the gating rule). GSM8K's *socratic* solutions give labelled pairs
for free: each solution line is ``sub-question ** solution sentence``, written by people,
so the sub-question and the sentence of the *same* step certainly agree and those of two
*different* steps of the same problem (a hard negative: same story, same numbers) do not.

Protocol (also quoted in ``gsrm.judges``' docstring):

- data: ``gsm8k/test_socratic.jsonl`` items 0-999 only; items >= 1000 are held out for
  evaluation and never read here;
- ``meta`` and ``subproblem``: positive ``(sub-question_i, sentence_i)``, negative
  ``(sub-question_i, sentence_j)``, j != i, for problems with at least two steps;
- ``answer``: positive ``(sentence_i, brief_i)``, negative ``(sentence_i, brief_j)``, where
  the brief is the sentence with its arithmetic removed ("Janet sells 16 - 3 - 4 = 9 duck eggs
  a day." -> "Janet sells 9 duck eggs a day."). Pairs where both sides parse as a number
  (``gsrm.judges.answer_number``) are left out: ``judge_many`` decides those numerically and
  they never reach the threshold being calibrated;
- pairs whose two texts are identical are left out (they score 1 under any judge and say
  nothing about where the threshold sits), and so are negatives whose texts equal the
  positive's (a repeated step is not a different step);
- the threshold is the candidate score maximising balanced accuracy (Youden's J) with the
  verdict ``score >= threshold``; ties go to the lowest threshold, because a false "no" costs
  more than a false "yes" under the reward's gating.

The script prints one JSON object (per judge and kind: n_pos, n_neg, ROC AUC, the chosen
threshold rounded to 2 decimals and the balanced accuracy there) and a table on stderr.

Example::

    $ python -m gsrm.calibrate --data ../shared/data --judges lexical --limit 200

    >>> from gsrm.calibrate import brief_answer, choose_threshold
    >>> brief_answer("Janet sells 16 - 3 - 4 = 9 duck eggs a day.")
    'Janet sells 9 duck eggs a day.'
    >>> choose_threshold([0.9, 0.8, 0.4], [0.5, 0.1]).threshold
    0.8
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gsrm.judges import JUDGES, ThresholdJudge, answer_number, get_judge
from gsrm.structure import KINDS, Kind

Pair = tuple[str, str]

#: number of leading items of test_socratic.jsonl reserved for calibration; the rest is held out
CALIBRATION_ITEMS = 1000
SOCRATIC_FILE = Path("gsm8k") / "test_socratic.jsonl"
DEFAULT_DATA = "../shared/data"


# --------------------------------------------------------------------------- parsing
@dataclass(frozen=True)
class SocraticStep:
    """One human-written step: the sub-question it answers and the solution sentence."""

    question: str
    text: str


@dataclass(frozen=True)
class SocraticItem:
    """A parsed socratic solution: its steps in order and the final answer after ``####``."""

    steps: tuple[SocraticStep, ...]
    final: str | None = None


_CALC = re.compile(r"<<[^<>]*>>")
_SPACES = re.compile(r"[ \t]+")


def strip_calculator(text: str) -> str:
    """Remove GSM8K calculator annotations ``<<16-3-4=9>>``; they are not part of the prose.

    >>> strip_calculator("sells 16 - 3 - 4 = <<16-3-4=9>>9 eggs")
    'sells 16 - 3 - 4 = 9 eggs'
    """
    return _SPACES.sub(" ", _CALC.sub("", text)).strip()


def parse_socratic(answer: str) -> SocraticItem:
    """Parse a socratic ``answer`` field: ``question ** sentence`` lines, then ``#### N``.

    Lines without ``**`` or with an empty side are skipped rather than guessed at, since a
    mis-split step would become a wrong label.

    >>> item = parse_socratic("How many? ** He has 2+3=<<2+3=5>>5.\\n#### 5")
    >>> item.steps[0], item.final
    (SocraticStep(question='How many?', text='He has 2+3=5.'), '5')
    """
    steps: list[SocraticStep] = []
    final: str | None = None
    for line in answer.splitlines():
        line = line.strip()
        if not line:
            continue
        if line.startswith("####"):
            final = line[4:].strip()
            continue
        if "**" not in line:
            continue
        question, text = line.split("**", 1)
        question, text = strip_calculator(question), strip_calculator(text)
        if question and text:
            steps.append(SocraticStep(question=question, text=text))
    return SocraticItem(steps=tuple(steps), final=final)


# --------------------------------------------------------------------------- brief answers
# An operand: an optional "(" or "$", a number (thousands commas, decimals, ".5", %), a unit
# glued on with "/" or "-" ("$4000/employee", "65-minute"), then at most six unit words ("8
# oranges + 4 oranges", "5 pieces of straw per hamster cage"; words cannot run past a number)
# and an optional ")".
_NUMBER = r"\$?(?:\d[\d,]*(?:\.\d+)?|\.\d+)%?"
# Connectives are never unit words, so "= 14 and -30/3 = -10" does not read "14 and" as an
# operand and swallow the first result.
_CONNECTIVE = r"(?:and|or|but|so|then|because|since|which|that|is|was|are|were|to|if|when)\b"
_UNIT_WORD = rf"\s+(?!{_CONNECTIVE})[A-Za-z][A-Za-z/'-]*"
_OPERAND = rf"(?:\(\s*)*{_NUMBER}(?:[-/][A-Za-z]+)?(?:{_UNIT_WORD}){{0,6}}(?:\s*\))*"
_OPERATOR = r"\s*[-+*/x×÷–−]\s*"
# An expression: operand (operator operand)+ then "=" (possibly a signed first operand, not in
# the middle of a word or number) -- what is left after it is the result.
_EXPRESSION = re.compile(rf"(?<![\w.$])[-−]?(?:{_OPERAND}{_OPERATOR})+{_OPERAND}\s*=\s*")


def brief_answer(text: str) -> str:
    """The solution sentence with its arithmetic removed: only the results remain.

    Each ``a op b [op c ...] =`` is deleted, so the sentence keeps the value after ``=``;
    this mimics the brief ``[Answer i]`` the GSRM is asked for. A sentence with no
    expression comes back unchanged (and its identity pair is dropped by ``build_pairs``).

    >>> brief_answer("She makes 9 * 2 = $18 every day at the farmer's market.")
    "She makes $18 every day at the farmer's market."
    >>> brief_answer("Together they wash 8 oranges + 4 oranges =12 oranges")
    'Together they wash 12 oranges'
    """
    out = _EXPRESSION.sub("", text)
    return _SPACES.sub(" ", out).strip()


# --------------------------------------------------------------------------- pairs
def _both_numeric(pair: Pair) -> bool:
    return answer_number(pair[0]) is not None and answer_number(pair[1]) is not None


def build_pairs(items: Iterable[SocraticItem], kind: Kind) -> tuple[list[Pair], list[Pair]]:
    """(positives, negatives) for one part kind, following the module's protocol.

    Only problems with at least two steps contribute, so every positive has negatives
    drawn from the same problem (same story, same numbers: the hard case for a matcher).

    >>> it = SocraticItem(steps=(SocraticStep("How many eggs?", "She has 2+3=5 eggs."),
    ...                          SocraticStep("How much money?", "She makes 5*2=$10 and a tip.")))
    >>> pos, neg = build_pairs([it], "subproblem")
    >>> pos[0], neg[0]
    (('How many eggs?', 'She has 2+3=5 eggs.'), ('How many eggs?', 'She makes 5*2=$10 and a tip.'))
    """
    if kind not in KINDS:
        raise ValueError(f"unknown part kind {kind!r}; choose one of {KINDS}")
    positives: list[Pair] = []
    negatives: list[Pair] = []
    for item in items:
        steps = item.steps
        if len(steps) < 2:
            continue
        if kind == "answer":
            lefts = [s.text for s in steps]
            rights = [brief_answer(s.text) for s in steps]
        else:
            lefts = [s.question for s in steps]
            rights = [s.text for s in steps]
        for i, (left, right) in enumerate(zip(lefts, rights)):
            pos = (left, right)
            if left != right and not (kind == "answer" and _both_numeric(pos)):
                positives.append(pos)
            for j, other in enumerate(rights):
                if j == i or other == right or other == left or lefts[j] == left:
                    continue
                neg = (left, other)
                if kind == "answer" and _both_numeric(neg):
                    continue
                negatives.append(neg)
    return positives, negatives


# --------------------------------------------------------------------------- metrics
@dataclass(frozen=True)
class ThresholdChoice:
    """The chosen threshold and its operating point (verdict: ``score >= threshold``)."""

    threshold: float
    balanced_accuracy: float
    tpr: float
    tnr: float


def rates(pos: Sequence[float], neg: Sequence[float], threshold: float) -> tuple[float, float]:
    """(true-positive rate, true-negative rate) of ``score >= threshold``."""
    tpr = sum(s >= threshold for s in pos) / len(pos) if pos else 0.0
    tnr = sum(s < threshold for s in neg) / len(neg) if neg else 0.0
    return tpr, tnr


def balanced_accuracy(pos: Sequence[float], neg: Sequence[float], threshold: float) -> float:
    """Mean of TPR and TNR: insensitive to the (large) negative/positive imbalance."""
    tpr, tnr = rates(pos, neg, threshold)
    return (tpr + tnr) / 2


def choose_threshold(pos: Sequence[float], neg: Sequence[float]) -> ThresholdChoice:
    """The candidate score maximising balanced accuracy (Youden's J = TPR + TNR - 1).

    Candidates are the distinct observed scores. Ties go to the lowest threshold: a false
    "no" costs more than a false "yes" (a meta "no" zeroes every later step of the reward).
    One sort and one sweep, so it is O(n log n) for the tens of thousands of pairs used.

    >>> c = choose_threshold([0.9, 0.7, 0.6], [0.65, 0.2, 0.1])
    >>> c.threshold, round(c.balanced_accuracy, 4)
    (0.6, 0.8333)
    """
    if not pos or not neg:
        raise ValueError("choose_threshold needs at least one positive and one negative score")
    events = sorted([(s, 1) for s in pos] + [(s, 0) for s in neg], reverse=True)
    n_pos, n_neg = len(pos), len(neg)
    tp = fp = 0
    best: ThresholdChoice | None = None
    k = 0
    while k < len(events):
        s = events[k][0]
        while k < len(events) and events[k][0] == s:  # all scores >= s are "yes"
            if events[k][1]:
                tp += 1
            else:
                fp += 1
            k += 1
        tpr, tnr = tp / n_pos, (n_neg - fp) / n_neg
        ba = (tpr + tnr) / 2
        if best is None or ba >= best.balanced_accuracy:  # >=: lower threshold wins ties
            best = ThresholdChoice(threshold=s, balanced_accuracy=ba, tpr=tpr, tnr=tnr)
    assert best is not None
    return best


def roc_auc(pos: Sequence[float], neg: Sequence[float]) -> float:
    """ROC AUC as the Mann-Whitney probability P(pos > neg) + 0.5 P(pos == neg).

    Computed from average ranks, so ties (frequent for token F1) count one half.

    >>> roc_auc([0.9, 0.5], [0.5, 0.1])
    0.875
    """
    if not pos or not neg:
        raise ValueError("roc_auc needs at least one positive and one negative score")
    allv = sorted([(s, 1) for s in pos] + [(s, 0) for s in neg])
    rank_sum = 0.0
    k = 0
    while k < len(allv):
        m = k
        while m < len(allv) and allv[m][0] == allv[k][0]:
            m += 1
        avg_rank = (k + 1 + m) / 2  # ranks k+1 .. m
        rank_sum += avg_rank * sum(flag for _, flag in allv[k:m])
        k = m
    n_pos, n_neg = len(pos), len(neg)
    return (rank_sum - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)


def floor2(x: float) -> float:
    """Round down to 2 decimals, tolerant of binary noise (0.7 stays 0.7, not 0.69).

    >>> floor2(0.266667), floor2(0.7), floor2(-0.123)
    (0.26, 0.7, -0.13)
    """
    return math.floor(x * 100 + 1e-9) / 100


def summarize(
    pos: Sequence[float], neg: Sequence[float], current: float | None = None
) -> dict[str, Any]:
    """The report for one judge and kind.

    The threshold is rounded *down* to 2 decimals (that is what gets copied into the judge's
    constants): rounding to nearest could lift it above a large cluster of tied scores at the
    chosen candidate (token F1 takes few values) and lose them; rounding down keeps every pair
    that matched and only adds scores in the gap. The accuracy is reported at the rounded
    value, with the raw candidate's alongside.
    """
    choice = choose_threshold(pos, neg)
    rounded = floor2(choice.threshold)
    tpr, tnr = rates(pos, neg, rounded)
    out: dict[str, Any] = {
        "n_pos": len(pos),
        "n_neg": len(neg),
        "auc": round(roc_auc(pos, neg), 4),
        "threshold": rounded,
        "balanced_accuracy": round((tpr + tnr) / 2, 4),
        "tpr": round(tpr, 4),
        "tnr": round(tnr, 4),
        "threshold_raw": round(choice.threshold, 6),
        "balanced_accuracy_raw": round(choice.balanced_accuracy, 4),
    }
    if current is not None:
        out["current_threshold"] = current
        out["current_balanced_accuracy"] = round(balanced_accuracy(pos, neg, current), 4)
    return out


def calibrate_judge(
    judge: ThresholdJudge, items: Sequence[SocraticItem], kinds: Sequence[Kind] = KINDS
) -> dict[str, dict[str, Any]]:
    """Score every pair of every kind with ``judge.scores`` and summarise each kind."""
    report: dict[str, dict[str, Any]] = {}
    for kind in kinds:
        positives, negatives = build_pairs(items, kind)
        if not positives or not negatives:
            report[kind] = {
                "n_pos": len(positives),
                "n_neg": len(negatives),
                "error": "not enough pairs",
            }
            continue
        scores = judge.scores(positives + negatives, kind)
        pos, neg = scores[: len(positives)], scores[len(positives) :]
        report[kind] = summarize(pos, neg, judge.thresholds.get(kind))
    return report


# --------------------------------------------------------------------------- I/O
def load_items(path: Path, limit: int = CALIBRATION_ITEMS) -> list[SocraticItem]:
    """Parse the first ``min(limit, 1000)`` lines; never reads the held-out items >= 1000."""
    n = max(0, min(limit, CALIBRATION_ITEMS))
    items: list[SocraticItem] = []
    with path.open(encoding="utf-8") as fh:
        for index, line in enumerate(fh):
            if index >= n:
                break
            if line.strip():
                items.append(parse_socratic(json.loads(line)["answer"]))
    return items


def threshold_judges() -> list[str]:
    """Registry names of the judges that have thresholds to calibrate."""
    return [
        name
        for name, factory in JUDGES.items()
        if isinstance(factory, type) and issubclass(factory, ThresholdJudge)
    ]


def _table(report: dict[str, dict[str, dict[str, Any]]]) -> str:
    head = (
        f"{'judge':<10} {'kind':<11} {'n_pos':>6} {'n_neg':>6} {'auc':>6} {'thr':>5} "
        f"{'bal.acc':>7} {'(now':>5} {'bal.acc)':>8}"
    )
    lines = [head, "-" * len(head)]
    for judge, kinds in report.items():
        for kind, r in kinds.items():
            if "error" in r:
                lines.append(
                    f"{judge:<10} {kind:<11} {r['n_pos']:>6} {r['n_neg']:>6}  {r['error']}"
                )
                continue
            lines.append(
                f"{judge:<10} {kind:<11} {r['n_pos']:>6} {r['n_neg']:>6} {r['auc']:>6.3f} "
                f"{r['threshold']:>5.2f} {r['balanced_accuracy']:>7.3f} "
                f"{r.get('current_threshold', float('nan')):>5.2f} "
                f"{r.get('current_balanced_accuracy', float('nan')):>8.3f}"
            )
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m gsrm.calibrate",
        description="Choose per-kind thresholds for the threshold judges on GSM8K socratic "
        "steps (items 0-999 of test_socratic.jsonl; items >= 1000 are held out).",
    )
    p.add_argument(
        "--data",
        default=DEFAULT_DATA,
        help="data root holding gsm8k/test_socratic.jsonl (default: %(default)s)",
    )
    p.add_argument(
        "--limit",
        type=int,
        default=CALIBRATION_ITEMS,
        help="use only the first N items (capped at %(default)s, the calibration split)",
    )
    p.add_argument(
        "--judges",
        nargs="+",
        default=None,
        metavar="NAME",
        help=f"judges to calibrate (default: all of {threshold_judges()})",
    )
    return p


def main(argv: list[str] | None = None) -> int:
    """Run the calibration and print the JSON report; 2 on bad input, 1 if a judge fails."""
    args = build_parser().parse_args(argv)
    names = args.judges or threshold_judges()
    allowed = threshold_judges()
    bad = [n for n in names if n not in allowed]
    if bad:
        print(f"error: cannot calibrate {bad}: choose from {allowed}", file=sys.stderr)
        return 2
    if args.limit < 1:
        print("error: --limit must be at least 1", file=sys.stderr)
        return 2
    path = Path(args.data) / SOCRATIC_FILE
    if not path.is_file():
        print(
            f"error: calibration data not found: {path} (pass --data DIR, the folder that "
            f"holds {SOCRATIC_FILE})",
            file=sys.stderr,
        )
        return 2
    items = load_items(path, args.limit)
    report: dict[str, dict[str, dict[str, Any]]] = {}
    timing: dict[str, float] = {}
    for name in names:
        t0 = time.perf_counter()
        try:
            judge = get_judge(name)
            assert isinstance(judge, ThresholdJudge)
            report[name] = calibrate_judge(judge, items)
        except (RuntimeError, ImportError, OSError, ValueError) as exc:  # e.g. model missing
            print(f"error: judge {name!r} failed: {type(exc).__name__}: {exc}", file=sys.stderr)
            return 1
        timing[name] = round(time.perf_counter() - t0, 2)
    out = {
        "data": str(path),
        "items": len(items),
        "split": f"test_socratic[0:{min(args.limit, CALIBRATION_ITEMS)}]",
        "rule": "match iff score >= threshold; threshold maximises balanced accuracy",
        "judges": report,
        "seconds": timing,
    }
    print(_table(report), file=sys.stderr)
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
