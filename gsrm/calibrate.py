"""Choose the per-part decision thresholds of the threshold judges from labelled step pairs.

Why: the embedding and lexical judges turn a similarity score into a yes/no verdict, and a
threshold picked by eye silently biases every reward (a too-strict ``meta`` threshold zeroes
all later steps through the gating rule; a too-loose one lets a different step through).

Protocol ``prmbench`` (the default; issue 17): **like for like**. The reward compares a
teacher's step i with a student's step i, part by part, so the thresholds are fitted on such
pairs. PRMBench gives, for a human step-by-step solution, a copy with some steps perturbed
(``modified_process``, ``error_steps``): an original step against the modified process's step
in its place is *same* when the perturbation left it alone and *different* when it is an
error step (``aligned_steps`` says how the two are paired, and why steps after the first error
are left out unless the perturbation changes nothing downstream). A step's parts are built as
the model-free decomposers build them (``text_step``: meta = sub-problem = the text, answer =
its number, else the text), so meta and sub-problem share their pairs. Identical parts are
settled by the reward without a judge (``gsrm.align.settled_verdict``) and two numeric
answers are compared as numbers, so the threshold is fitted on the remaining pairs of the
train split of ``prmbench/prm800k_train_*`` (Youden's J, rounded down to 2 decimals; the
split is the evaluation's hash, ``in_split``) and reported on ``prmbench/prm800k_test_*``,
the evaluation's held-out items (``prmbench-structure``), never fitted on: the judge's
balanced accuracy on the pairs it decides, and the balanced accuracy of the reward's verdict
over all pairs (``like_for_like``). ``--report dev`` reports on the dev split's rows of
``prm800k_train_*`` instead (``prmbench-structure --split dev``'s items), where a threshold is
chosen; ``--fit all`` fits on every ``prm800k_train_*`` row, as the shipped thresholds were
fitted before the dev split was drawn from those files.

Protocol ``socratic`` (the earlier one, kept for comparison): GSM8K's socratic solutions
(``gsm8k/test_socratic.jsonl`` items 0-999; items >= 1000 are held out for evaluation):

- ``meta`` and ``subproblem``: positive ``(sub-question_i, sentence_i)``, negative
  ``(sub-question_i, sentence_j)``, j != i, for problems with at least two steps;
- ``answer``: positive ``(sentence_i, brief_i)``, negative ``(sentence_i, brief_j)``, where
  the brief is the sentence with its arithmetic removed ("Janet sells 16 - 3 - 4 = 9 duck eggs
  a day." -> "Janet sells 9 duck eggs a day."). Pairs where both sides parse as a number
  (``gsrm.judges.answer_number``) are left out: ``judge_many`` decides those numerically and
  they never reach the threshold being calibrated;
- pairs whose two texts are identical are left out (they score 1 under any judge and say
  nothing about where the threshold sits), and so are negatives whose texts equal the
  positive's (a repeated step is not a different step).

It paired a question with a solution sentence and applied the result to meta-vs-meta and
question-vs-question pairs, which is what issue 17 replaced.

In both, the threshold is the candidate score maximising balanced accuracy (Youden's J) with
the verdict ``score >= threshold``; ties go to the lowest threshold, because a false "no" costs
more than a false "yes" under the reward's gating. The script prints one JSON object and a
table on stderr.

Example::

    $ python -m gsrm.calibrate --data ../shared/data --judges lexical embedding
    $ python -m gsrm.calibrate --data ../shared/data --report dev     # where thresholds are chosen
    $ python -m gsrm.calibrate --data ../shared/data --protocol socratic --limit 200

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

from gsrm.judges import JUDGES, ThresholdJudge, answer_number, get_judge, numbers_agree
from gsrm.structure import KINDS, Kind, Step

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


# "= value" and the unit words after it; ``_RESULT_END`` (``result_answer``) also needs the
# value to end there
_RESULT_VALUE = r"=\s*\(?(-?\$?\s*-?[\d,]*\.?\d+\s*%?)"
_RESULT_UNIT = r"\)?\s*([A-Za-z][A-Za-z'\- ]{0,40})?"
_RESULT = re.compile(_RESULT_VALUE + _RESULT_UNIT)
# unit words end at a function word
_UNIT_STOPS = (r"and|so|which|for|in|on|at|to|per|each|every|if|then|that|is|are|was|were|of|"
               r"from|with|by|a|an|the")
_STOP_UNIT = re.compile(rf"\b(?:{_UNIT_STOPS})\b.*$", re.IGNORECASE)
#: a step with no calculation keeps at most this many words of its last sentence
SHORT_ANSWER_WORDS = 10


def _last_result(text: str, pattern: re.Pattern[str], stop: re.Pattern[str]) -> str | None:
    """The value of the last ``pattern`` match ("= value unit words") with at most three of
    its unit words, up to ``stop``; None when nothing matches."""
    found = list(pattern.finditer(text))
    if not found:
        return None
    m = found[-1]
    unit = " ".join(stop.sub("", m.group(2) or "").split()[:3])
    return f"{' '.join(m.group(1).split())} {unit}".strip()


def _last_sentence(text: str) -> str:
    """The text's last sentence without its arithmetic (``brief_answer``) or final stop."""
    return brief_answer(re.split(r"(?<=[.!?])\s+", text.strip())[-1]).rstrip(".")


def _last_words(text: str) -> str:
    """``text``, or its last ``SHORT_ANSWER_WORDS`` words when it is longer."""
    words = text.split()
    return " ".join(words[-SHORT_ANSWER_WORDS:]) if len(words) > SHORT_ANSWER_WORDS else text


def short_answer(text: str) -> str:
    """A step's result stated briefly, the form the describer writes as its ``[Answer]``.

    The value after the step's last "=" with the unit words that follow it ("72 eggs",
    "$18"); for a step with no calculation, its last sentence without arithmetic
    (``brief_answer``), cut to its last few words. Used to build the describer's targets
    (``training.descdata``) and as the reference of ``answer_agree_short`` in the GSM8K
    evaluation, so both read a "brief answer" the same way.

    >>> short_answer("Natalia sold 48/2 = 24 clips in May.")
    '24 clips'
    >>> short_answer("She makes 9 * 2 = $18 every day at the farmer's market.")
    '$18'
    """
    result = _last_result(text, _RESULT, _STOP_UNIT)
    return result if result is not None else _last_words(_last_sentence(text))


# A stricter reading of "= value" for ``result_answer``: not the first number of a term or of
# a sum that goes on ("= 20v - 75", "= 13 + 4 \cdot ...").
_RESULT_END = re.compile(_RESULT_VALUE + r"(?![\w^({\\]|\s*[-+*/^×÷]\s*[\w(\\$])" + _RESULT_UNIT)
# unit words also end at a verb or pronoun that starts the rest of the sentence
_STOP_WORD = re.compile(rf"\b(?:{_UNIT_STOPS}|as|be|has|have|had|can|will|would|should|must|"
                        r"it|we|this|where|when|since|but|or|not|than)\b.*$", re.IGNORECASE)
#: a formula longer than this is not a brief answer
SHORT_FORMULA_CHARS = 40
_BOXED = re.compile(r"\\boxed\{((?:[^{}]|\{(?:[^{}]|\{[^{}]*\})*\})*)\}")
# inline math ($...$, \(...\); not "$18 and $", two amounts of money) or a standalone number
# (not a digit inside a formula written without $, such as "n^4+4^n"), then the words after it
_VALUE = re.compile(r"(\$(?!\d[\d,.]*\s)[^$]+\$|\\\(.+?\\\)|"
                    r"(?<![^\s(\[])-?\$?\d+(?:,\d{3})*(?:\.\d+)?%?(?![\w^.]|\.\d))"
                    r"((?:\s+[A-Za-z][A-Za-z'-]*){0,3})")
# a trailing "..., where $d$ is ..." defines a symbol; the result is before it
_WHERE = re.compile(r",\s+where\b.*$")
_CLAUSE = re.compile(r";\s+|\b(?:so|thus|therefore|hence|then)\b,?\s+", re.IGNORECASE)


def _last_value(sentence: str) -> str | None:
    """The sentence's last value (inline formula or number; a formula of at most
    ``SHORT_FORMULA_CHARS``) with the unit words after it ("$5$ ways", "15 inches")."""
    for m in reversed(list(_VALUE.finditer(sentence))):
        value = m.group(1)
        if value.startswith(("$", "\\(")) and len(value) > SHORT_FORMULA_CHARS:
            continue
        unit = _STOP_WORD.sub("", m.group(2) or "").strip()
        return f"{value} {unit}".strip()
    return None


def result_answer(text: str) -> str:
    r"""A step's result for long reasoning traces: ``short_answer`` read for LaTeX and steps
    without "=".

    In order: the last ``\boxed{}``; the value after the step's last "=" that ends there
    ("72 eggs"; not "= 20v - 75"); the last sentence's last inline formula or number, with
    its unit words ("$5$ ways", "15 inches"); else that sentence's last clause (after "so",
    "thus", "then", ";"), cut to its last ``SHORT_ANSWER_WORDS`` words. Why: on long traces
    a step's last sentence is rarely a calculation with "=", and ``short_answer`` then keeps
    the sentence's last ten words, often a copy of the span (README, "Brief answers in the
    data", has the counts). An opt-in answer rule of the describer data
    (``training.descdata.ANSWER_RULES``), not the evaluation's reference.

    >>> result_answer("That's right. So there are $5$ ways to choose four letters.")
    '$5$ ways'
    >>> result_answer("This gives us $20(k + 1) = \\boxed{80}.$")
    '80'
    >>> result_answer("Then seventh is the sedan, so the oldest is the truck.")
    'the oldest is the truck'
    """
    boxed = _BOXED.findall(text)
    if boxed:
        return " ".join(boxed[-1].split())
    result = _last_result(text, _RESULT_END, _STOP_WORD)
    if result is not None:
        return result
    sentence = _WHERE.sub("", _last_sentence(text))
    value = _last_value(sentence)
    if value is not None:
        return value
    return _last_words(_CLAUSE.split(sentence)[-1].strip() or sentence)


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


# --------------------------------------------------------------------------- PRMBench (like for like)
PRMBENCH_DIR = Path("prmbench")
#: the files thresholds are fitted on, and the files reported on (the evaluation's held-out
#: items of ``prmbench-structure``: never fitted on)
FIT_GLOB = "prm800k_train_*.jsonl"
REPORT_GLOB = "prm800k_test_*.jsonl"
FIT_SPLITS = ("train", "all")
"""``--fit``: the ``FIT_GLOB`` rows fitted on: the train split's (the default), or every row
(how the shipped thresholds were fitted, before the dev split was drawn from these files)."""
REPORTS = ("test", "dev")
"""``--report``: the test files (``REPORT_GLOB``), or the dev split's ``FIT_GLOB`` rows, where
a threshold is chosen."""
_STEP_NUMBER = re.compile(r"^\s*\d+\s*[.)]\s+")
#: perturbations whose error steps leave the rest of the solution as it was (PRMBench:
#: redundant steps "without changing the correctness"; its files spell it "redundency")
NO_DOWNSTREAM_CHANGE = frozenset({"redundency", "redundancy"})


def strip_numbering(step: str) -> str:
    """Drop the "3. " prefix PRMBench added to every step.

    >>> strip_numbering("3. Then 2 + 2 = 4."), strip_numbering("3.5 is the value.")
    ('Then 2 + 2 = 4.', '3.5 is the value.')
    """
    return _STEP_NUMBER.sub("", step, count=1).strip()


def text_step(text: str) -> Step:
    """The parts of a step given as one text, built as every model-free decomposer builds them
    (``gsrm.backends.SentenceBackend``, the rule systems of ``eval.systems``): the
    meta-reasoning and the sub-problem are the text, the answer its number
    (``gsrm.judges.answer_number``, written ``%g``) or, without one, the text.

    >>> text_step("So 2p = 0.58, and p = 0.29.").answer, text_step("Add them up.").answer
    ('0.29', 'Add them up.')
    """
    num = answer_number(text)
    return Step(meta=text, subproblem=text, answer=f"{num:g}" if num is not None else text)


@dataclass(frozen=True)
class StepPair:
    """An original step and the modified process's step in its place; ``same``: the label."""

    original: str
    modified: str
    same: bool
    perturbation: str
    where: str


def aligned_steps(n_original: int, n_modified: int, modified_steps: Sequence[int],
                  error_steps: Sequence[int], after_error: bool = False,
                  ) -> list[tuple[int, int, bool]]:
    """(original, modified, same) step pairs (1-based) of one PRMBench row.

    Labels: a step the perturbation left alone is *same*; a step listed in ``error_steps``
    is *different*. An error's consequences run on into the steps after it ("so n is 71.5"
    becomes "so n is 45" without being listed as modified), so *same* steps after the first
    error step are kept only with ``after_error`` (for perturbations that change nothing
    downstream: PRMBench's redundancy). The data says which steps changed, not which original
    step a modified one stands for, so the pairing follows the two shapes the rows take:

    - replacement (as many steps as the original): step i against step i; *same* where i is
      not in ``modified_steps``, *different* where it is in ``error_steps`` (a modified step
      that is not an error is left out: neither label is certain);
    - insertion (the unmodified steps are exactly as many as the original's): the unmodified
      steps against the original ones in order (*same*; often reworded: "So 2p = 0.58" for
      "This simplifies to 2p = 0.58"), and each inserted error step k against original step k,
      the step a positional reward compares it with (*different*);
    - anything else: the steps before the first modified one (*same*) and the first error
      step against the original step in its place (*different*).

    >>> aligned_steps(4, 4, [2], [2], after_error=True)
    [(1, 1, True), (3, 3, True), (4, 4, True), (2, 2, False)]
    >>> aligned_steps(3, 4, [3], [3], after_error=True)
    [(1, 1, True), (2, 2, True), (3, 4, True), (3, 3, False)]
    >>> aligned_steps(4, 4, [2], [2])  # the steps after the error may carry it: left out
    [(1, 1, True), (2, 2, False)]
    """
    mod, err = set(modified_steps), set(error_steps)
    same: list[tuple[int, int, bool]] = []
    diff: list[tuple[int, int, bool]] = []
    if n_modified == n_original:
        same = [(i, i, True) for i in range(1, n_original + 1) if i not in mod]
        diff = [(i, i, False) for i in sorted(err) if i <= n_original]
    elif n_modified - len(mod & set(range(1, n_modified + 1))) == n_original:
        kept = [k for k in range(1, n_modified + 1) if k not in mod]
        same = [(j, k, True) for j, k in zip(range(1, n_original + 1), kept)]
        diff = [(k, k, False) for k in sorted(err) if k <= n_original]
    else:
        first = min(mod) if mod else n_original + 1
        same = [(i, i, True) for i in range(1, min(first, n_original + 1, n_modified + 1))]
        k = min(err) if err else 0
        if 1 <= k <= min(n_original, n_modified):
            diff = [(k, k, False)]
    if not after_error and err:
        same = [t for t in same if t[1] < min(err)]
    return same + diff


def in_split(question: str, split: str | None) -> bool:
    """Whether a ``prm800k_train_*`` row's problem is in ``split`` (None: every row) by the
    evaluation's hash (``eval.splits.split_of``, source ``prmbench``): the rows of its dev
    split are ``prmbench-structure``'s dev items, so thresholds are fitted on the train rows
    and chosen on the dev ones.

    >>> in_split("How many seconds are in 7.8 minutes?", None)
    True
    """
    if split is None:
        return True
    from eval.splits import split_of

    return split_of(question, "prmbench") == split


def load_step_pairs(folder: Path, pattern: str, limit: int | None = None,
                    split: str | None = None) -> list[StepPair]:
    """Labelled step pairs from the PRMBench files matching ``pattern`` (``limit`` rows per
    file, counted before the ``split`` filter: ``in_split``); a malformed row is skipped,
    since a guessed label would be a wrong one."""
    files = sorted(folder.glob(pattern))
    out: list[StepPair] = []
    for f in files:
        with f.open(encoding="utf-8") as fh:
            for n, line in enumerate(fh, start=1):
                if limit is not None and n > limit:
                    break
                try:
                    row = json.loads(line)
                    original = [strip_numbering(x) for x in row["original_process"]]
                    modified = [strip_numbering(x) for x in row["modified_process"]]
                    mod = [int(x) for x in row.get("modified_steps", [])]
                    err = [int(x) for x in row.get("error_steps", [])]
                    kind = str(row.get("classification", "unknown"))
                    if split is not None and not in_split(str(row["original_question"]),
                                                          split):
                        continue
                except (ValueError, KeyError, TypeError):
                    continue
                downstream_safe = kind in NO_DOWNSTREAM_CHANGE
                for i, k, same in aligned_steps(len(original), len(modified), mod, err,
                                                after_error=downstream_safe):
                    a, b = original[i - 1], modified[k - 1]
                    if a and b:
                        out.append(StepPair(a, b, same, kind, f"{f.name}:{n}:{k}"))
    return out


def part_pairs(pairs: Sequence[StepPair], kind: Kind) -> list[Pair]:
    """The (teacher part, student part) texts of each step pair for one part kind."""
    return [(text_step(p.original).part(kind), text_step(p.modified).part(kind)) for p in pairs]


def _route(pair: Pair, kind: Kind, numbers: bool = False) -> str:
    """How the reward decides a part pair: ``settled`` (identical or empty: ``gsrm.align``),
    ``numeric`` (two answers with numbers: ``Judge.judge_many``), ``numbers`` (with the
    judge's number check, texts stating different numbers: a mismatch,
    ``gsrm.judges.numbers_agree``) or ``judge`` (the threshold)."""
    from gsrm.align import settled_verdict

    if settled_verdict(*pair) is not None:
        return "settled"
    if kind == "answer" and answer_number(pair[0]) is not None \
            and answer_number(pair[1]) is not None:
        return "numeric"
    if numbers and not numbers_agree(*pair):
        return "numbers"
    return "judge"


def like_for_like(judge: ThresholdJudge, fit: Sequence[StepPair], report: Sequence[StepPair],
                  kinds: Sequence[Kind] = KINDS) -> dict[str, dict[str, Any]]:
    """Per part: the threshold fitted on ``fit``, and its balanced accuracy on ``report``.

    Only the pairs the threshold decides (``_route`` = judge) are fitted on. On the report
    split two accuracies are given: ``judge``, over those pairs (how well the threshold
    separates what it is asked about), and ``verdict``, over every pair with the reward's own
    routing (identical and empty parts settled, numbers compared, the rest thresholded): how
    often the part's verdict in the reward agrees with the label. Meta and sub-problem see the
    same texts (``text_step``), so their figures agree.
    """
    out: dict[str, dict[str, Any]] = {}
    scored: dict[tuple[str, ...], list[float]] = {}

    def scores_of(pairs: list[Pair], kind: Kind) -> list[float]:
        key = (kind if kind == "answer" else "text", *(a + "\0" + b for a, b in pairs))
        if key not in scored:
            scored[key] = judge.scores(pairs, kind) if pairs else []
        return scored[key]

    for kind in kinds:
        splits: dict[str, dict[str, Any]] = {}
        for name, data in (("fit", fit), ("report", report)):
            texts = part_pairs(data, kind)
            routes = [_route(t, kind, judge.numbers) for t in texts]
            jidx = [i for i, r in enumerate(routes) if r == "judge"]
            js = scores_of([texts[i] for i in jidx], kind)
            splits[name] = {"texts": texts, "routes": routes, "jidx": jidx, "scores": js,
                            "labels": [p.same for p in data]}
        f = splits["fit"]
        pos = [s for i, s in zip(f["jidx"], f["scores"]) if f["labels"][i]]
        neg = [s for i, s in zip(f["jidx"], f["scores"]) if not f["labels"][i]]
        if not pos or not neg:
            out[kind] = {"n_pos": len(pos), "n_neg": len(neg), "error": "not enough pairs"}
            continue
        choice = choose_threshold(pos, neg)
        threshold = floor2(choice.threshold)
        r = splits["report"]
        rpos = [s for i, s in zip(r["jidx"], r["scores"]) if r["labels"][i]]
        rneg = [s for i, s in zip(r["jidx"], r["scores"]) if not r["labels"][i]]
        tpr, tnr = rates(rpos, rneg, threshold)
        verdict = _verdict_accuracy(r, kind, threshold)
        current = judge.thresholds.get(kind)
        entry: dict[str, Any] = {
            "threshold": threshold,
            "fit": {"n_pos": len(pos), "n_neg": len(neg),
                    "balanced_accuracy": round(balanced_accuracy(pos, neg, threshold), 4)},
            "report": {
                "n_pos": len(rpos), "n_neg": len(rneg),
                "auc": round(roc_auc(rpos, rneg), 4) if rpos and rneg else None,
                "judge_balanced_accuracy": round((tpr + tnr) / 2, 4),
                "tpr": round(tpr, 4), "tnr": round(tnr, 4),
                **verdict,
            },
        }
        if current is not None:
            entry["current_threshold"] = current
            entry["report"]["judge_balanced_accuracy_at_current"] = round(
                balanced_accuracy(rpos, rneg, current), 4)
            entry["report"]["verdict_balanced_accuracy_at_current"] = _verdict_accuracy(
                r, kind, current)["verdict_balanced_accuracy"]
        out[kind] = entry
    return out


def _verdict_accuracy(split: dict[str, Any], kind: Kind, threshold: float) -> dict[str, Any]:
    """Balanced accuracy of the reward's verdicts (settled, numeric, thresholded) vs labels."""
    from gsrm.align import settled_verdict
    from gsrm.judges import numbers_equal

    score_at = dict(zip(split["jidx"], split["scores"]))
    hits = {True: [0, 0], False: [0, 0]}  # label -> [correct, total]
    for i, ((a, b), route, same) in enumerate(zip(split["texts"], split["routes"],
                                                  split["labels"])):
        if route == "settled":
            v = settled_verdict(a, b)
            match = bool(v and v.match)
        elif route == "numeric":
            match = numbers_equal(answer_number(a), answer_number(b))  # type: ignore[arg-type]
        elif route == "numbers":
            match = False
        else:
            match = score_at[i] >= threshold
        hits[same][0] += match == same
        hits[same][1] += 1
    tpr = hits[True][0] / hits[True][1] if hits[True][1] else 0.0
    tnr = hits[False][0] / hits[False][1] if hits[False][1] else 0.0
    return {"verdict_n_pos": hits[True][1], "verdict_n_neg": hits[False][1],
            "verdict_balanced_accuracy": round((tpr + tnr) / 2, 4),
            "verdict_tpr": round(tpr, 4), "verdict_tnr": round(tnr, 4)}


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


def _like_table(report: dict[str, dict[str, dict[str, Any]]], fit: str = "train",
                reported: str = "test") -> str:
    """The like-for-like report as a table: fitted threshold, then the report split's
    figures."""
    head = (f"{'judge':<10} {'part':<11} {'thr':>5} {'n_pos':>6} {'n_neg':>6} {'auc':>6} "
            f"{'judge':>6} {'verdict':>7} | {'now':>5} {'judge':>6} {'verdict':>7}")
    title = (f"{_split_files('report', reported)}; thresholds fitted on "
             f"{_split_files('fit', fit)}; balanced accuracy of the judge (pairs it decides) "
             "and of the reward's verdict (all pairs)")
    lines = [title, head, "-" * len(head)]
    for judge, kinds in report.items():
        for kind, r in kinds.items():
            if "error" in r:
                lines.append(f"{judge:<10} {kind:<11} {r['error']}")
                continue
            t = r["report"]
            auc = t["auc"] if t["auc"] is not None else float("nan")
            lines.append(
                f"{judge:<10} {kind:<11} {r['threshold']:>5.2f} {t['n_pos']:>6} {t['n_neg']:>6} "
                f"{auc:>6.3f} {t['judge_balanced_accuracy']:>6.3f} "
                f"{t['verdict_balanced_accuracy']:>7.3f} | "
                f"{r.get('current_threshold', float('nan')):>5.2f} "
                f"{t.get('judge_balanced_accuracy_at_current', float('nan')):>6.3f} "
                f"{t.get('verdict_balanced_accuracy_at_current', float('nan')):>7.3f}")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m gsrm.calibrate",
        description="Choose per-part thresholds for the threshold judges. Default protocol "
        "'prmbench': like-for-like step pairs (an original step against the modified "
        "process's step in its place: unchanged = same, error step = different), fitted on "
        "the train split of prmbench/prm800k_train_*, reported on prmbench/prm800k_test_* "
        "(--fit, --report). Protocol 'socratic' "
        "(the earlier one): GSM8K socratic sub-question vs solution-sentence pairs, items "
        "0-999 of test_socratic.jsonl.",
    )
    p.add_argument(
        "--data",
        default=DEFAULT_DATA,
        help="data root holding prmbench/ (and gsm8k/test_socratic.jsonl) (default: "
        "%(default)s)",
    )
    p.add_argument("--protocol", choices=("prmbench", "socratic"), default="prmbench",
                   help="which labelled pairs (default: %(default)s)")
    p.add_argument(
        "--limit",
        type=int,
        default=None,
        help="prmbench: rows per file; socratic: the first N items (capped at "
        f"{CALIBRATION_ITEMS}, the calibration split); default: all",
    )
    p.add_argument(
        "--judges",
        nargs="+",
        default=None,
        metavar="NAME",
        help=f"judges to calibrate (default: all of {threshold_judges()})",
    )
    p.add_argument("--fit", choices=FIT_SPLITS, default=FIT_SPLITS[0],
                   help="prmbench: fit on the train split's prm800k_train_* rows, or on all of "
                        "them (how the shipped thresholds were fitted) (default: %(default)s)")
    p.add_argument("--report", choices=REPORTS, default=REPORTS[0],
                   help="prmbench: report on the test files, or on the dev split's "
                        "prm800k_train_* rows, where thresholds are chosen "
                        "(default: %(default)s)")
    p.add_argument("--no-numbers", action="store_true",
                   help="judge by the score alone, without the number check "
                   "(gsrm.judges.numbers_agree): the ablation")
    return p


def _split_files(role: str, split: str) -> str:
    """What ``--fit`` / ``--report`` read, in words (the report's and the table's).

    >>> _split_files("fit", "train"), _split_files("report", "test")
    ('prm800k_train_*.jsonl, train split', 'prm800k_test_*.jsonl')
    """
    if role == "report" and split == "test":
        return REPORT_GLOB
    return FIT_GLOB if split == "all" else f"{FIT_GLOB}, {split} split"


def _judge(name: str, numbers: bool = True) -> ThresholdJudge:
    judge = get_judge(name, numbers=numbers)
    assert isinstance(judge, ThresholdJudge)
    return judge


def _main_prmbench(args: argparse.Namespace, names: list[str]) -> int:
    folder = Path(args.data) / PRMBENCH_DIR
    fit_split = None if args.fit == "all" else args.fit
    report_glob, report_split = (FIT_GLOB, "dev") if args.report == "dev" else (REPORT_GLOB, None)
    fit, report_pairs = ([], [])
    if folder.is_dir():
        fit = load_step_pairs(folder, FIT_GLOB, args.limit, fit_split)
        report_pairs = load_step_pairs(folder, report_glob, args.limit, report_split)
    if not fit or not report_pairs:
        print(f"error: PRMBench data not found: {folder} needs {FIT_GLOB} and {REPORT_GLOB} "
              f"(pass --data DIR, the folder that holds {PRMBENCH_DIR}/)", file=sys.stderr)
        return 2
    report: dict[str, dict[str, dict[str, Any]]] = {}
    timing: dict[str, float] = {}
    for name in names:
        t0 = time.perf_counter()
        try:
            report[name] = like_for_like(_judge(name, not args.no_numbers), fit, report_pairs)
        except (RuntimeError, ImportError, OSError, ValueError) as exc:  # e.g. model missing
            print(f"error: judge {name!r} failed: {type(exc).__name__}: {exc}", file=sys.stderr)
            return 1
        timing[name] = round(time.perf_counter() - t0, 2)

    def counts(pairs: list[StepPair]) -> dict[str, int]:
        return {"same": sum(p.same for p in pairs), "different": sum(not p.same for p in pairs)}

    out = {
        "protocol": "prmbench like-for-like",
        "data": str(folder),
        "fit": {"files": _split_files("fit", args.fit), "pairs": counts(fit)},
        "report": {"files": _split_files("report", args.report),
                   "pairs": counts(report_pairs)},
        "parts": "meta = sub-problem = the step text; answer = its number, else the text "
                 "(gsrm.calibrate.text_step, as the model-free decomposers build steps)",
        "rule": "match iff score >= threshold; threshold maximises balanced accuracy on the "
                "fit split's judge-decided pairs, rounded down to 2 decimals",
        "number_check": not args.no_numbers,
        "judges": report,
        "seconds": timing,
    }
    print(_like_table(report, args.fit, args.report), file=sys.stderr)
    print(json.dumps(out))
    return 0


def _main_socratic(args: argparse.Namespace, names: list[str]) -> int:
    path = Path(args.data) / SOCRATIC_FILE
    if not path.is_file():
        print(
            f"error: calibration data not found: {path} (pass --data DIR, the folder that "
            f"holds {SOCRATIC_FILE})",
            file=sys.stderr,
        )
        return 2
    limit = CALIBRATION_ITEMS if args.limit is None else args.limit
    items = load_items(path, limit)
    report: dict[str, dict[str, dict[str, Any]]] = {}
    timing: dict[str, float] = {}
    for name in names:
        t0 = time.perf_counter()
        try:
            report[name] = calibrate_judge(_judge(name), items)
        except (RuntimeError, ImportError, OSError, ValueError) as exc:  # e.g. model missing
            print(f"error: judge {name!r} failed: {type(exc).__name__}: {exc}", file=sys.stderr)
            return 1
        timing[name] = round(time.perf_counter() - t0, 2)
    out = {
        "protocol": "socratic",
        "data": str(path),
        "items": len(items),
        "split": f"test_socratic[0:{min(limit, CALIBRATION_ITEMS)}]",
        "rule": "match iff score >= threshold; threshold maximises balanced accuracy",
        "judges": report,
        "seconds": timing,
    }
    print(_table(report), file=sys.stderr)
    print(json.dumps(out))
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run the calibration and print the JSON report; 2 on bad input, 1 if a judge fails."""
    args = build_parser().parse_args(argv)
    names = args.judges or threshold_judges()
    allowed = threshold_judges()
    bad = [n for n in names if n not in allowed]
    if bad:
        print(f"error: cannot calibrate {bad}: choose from {allowed}", file=sys.stderr)
        return 2
    if args.limit is not None and args.limit < 1:
        print("error: --limit must be at least 1", file=sys.stderr)
        return 2
    if args.protocol == "prmbench":
        return _main_prmbench(args, names)
    return _main_socratic(args, names)


if __name__ == "__main__":
    raise SystemExit(main())
