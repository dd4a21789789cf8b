"""Pure evaluation metrics: segmentation, role agreement, reward ranking.

Why pure functions with counts: the suite aggregates over documents (micro averages need the
raw counts, not per-document ratios), the tests check hand-computed values exactly, and the
report and ``gsrm-eval compare`` only ever see plain numbers. Nothing here reads files.

**Boundaries.** A segmentation of a text is given by its *boundaries*: the positions where a
segment other than the first begins. Two units are used, with the same functions:

- *characters*: a boundary is the character offset of the first non-space character of a
  segment (0-based into the trace). ``tolerance`` k (characters) accepts a hypothesis
  boundary within k characters of a reference boundary: ``|h - r| <= k``.
- *sentences*: the trace is cut into sentence units (``gsrm.projection.sentence_units``);
  a boundary ``u`` means "a segment starts at sentence u" (so ``1 <= u < n_units``).
  ``tolerance`` k (sentences) accepts ``|h - r| <= k``; k = 0 asks for the exact gap.

Reference and hypothesis boundaries are matched one-to-one (each boundary counts at most
once), maximising the number of matches; on a line, the greedy left-to-right two-pointer
sweep is optimal for that. Precision is matches / hypothesis boundaries (1.0 when the
hypothesis has none), recall matches / reference boundaries (1.0 when the reference has
none), F1 their harmonic mean; so a single-segment reference and hypothesis agree perfectly.

**Exact segments.** A segment is the pair (its boundary, the next boundary), with 0 and the
length as outer boundaries; exact-segment F1 counts segments whose both ends match exactly.

**Pk / WindowDiff** (``nltk.metrics.segmentation``) on sentence units: the sequence has one
symbol per unit, ``"1"`` where a boundary follows that unit; the window ``k`` is half the
mean reference segment length in units (at least 1), the usual convention. Lower is better.

**Roles** (``meta``, ``solve``, ``other``) per sentence unit: accuracy, macro-F1 over the
three labels and Cohen's kappa (scikit-learn). Kappa is undefined when both sides use a single
identical label; it is reported as ``None`` there.

**Ranking**: paired ranking accuracy (the aligned item scores strictly higher; ties count a
half) and ROC AUC (scikit-learn) of aligned (positive) vs perturbed (negative) scores.

Example::

    >>> boundary_prf([10, 30], [12, 50], tolerance=2).f1
    0.5
    >>> segments_from_boundaries([4, 9], 12)
    [(0, 4), (4, 9), (9, 12)]
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

ROLES: tuple[str, ...] = ("meta", "solve", "other")


# --------------------------------------------------------------------------- P/R/F1
@dataclass(frozen=True)
class PRF:
    """Match counts with precision, recall and F1 derived from them (see the module rules)."""

    matched: int
    n_hyp: int
    n_ref: int

    @property
    def precision(self) -> float:
        return self.matched / self.n_hyp if self.n_hyp else 1.0

    @property
    def recall(self) -> float:
        return self.matched / self.n_ref if self.n_ref else 1.0

    @property
    def f1(self) -> float:
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p + r else 0.0

    def __add__(self, other: PRF) -> PRF:
        """Sum the counts: the sum of per-document PRFs is the micro average."""
        return PRF(self.matched + other.matched, self.n_hyp + other.n_hyp,
                   self.n_ref + other.n_ref)


def micro(prfs: Iterable[PRF]) -> PRF:
    """Micro-average: pool the counts of many documents.

    >>> micro([PRF(1, 2, 1), PRF(0, 0, 1)]).recall
    0.5
    """
    total = PRF(0, 0, 0)
    for p in prfs:
        total = total + p
    return total


def match_boundaries(ref: Iterable[int], hyp: Iterable[int], tolerance: int = 0) -> int:
    """Maximum number of one-to-one pairs (r, h) with ``|r - h| <= tolerance``.

    >>> match_boundaries([10, 11], [10], tolerance=1)   # one hypothesis boundary, used once
    1
    """
    if tolerance < 0:
        raise ValueError("tolerance must be >= 0")
    r, h = sorted(set(ref)), sorted(set(hyp))
    i = j = n = 0
    while i < len(r) and j < len(h):
        if abs(r[i] - h[j]) <= tolerance:
            n += 1
            i += 1
            j += 1
        elif h[j] < r[i]:
            j += 1
        else:
            i += 1
    return n


def boundary_prf(ref: Iterable[int], hyp: Iterable[int], tolerance: int = 0) -> PRF:
    """Boundary precision/recall/F1 with a tolerance (characters or sentences: same rule)."""
    rs, hs = set(ref), set(hyp)
    return PRF(match_boundaries(rs, hs, tolerance), len(hs), len(rs))


def segments_from_boundaries(boundaries: Iterable[int], length: int) -> list[tuple[int, int]]:
    """Segments (start, end) of a text of ``length`` units cut at ``boundaries``.

    Boundaries outside ``(0, length)`` are ignored: they cannot start a non-first segment.
    """
    cuts = sorted(b for b in set(boundaries) if 0 < b < length)
    edges = [0, *cuts, length]
    return [(edges[k], edges[k + 1]) for k in range(len(edges) - 1)]


def segment_prf(ref: Iterable[int], hyp: Iterable[int], length: int) -> PRF:
    """Exact-segment P/R/F1: a segment matches only if both of its ends match exactly.

    >>> segment_prf([2, 5], [2, 6], length=8).f1  # only (0, 2) agrees of three segments each
    0.3333333333333333
    """
    rs = set(segments_from_boundaries(ref, length))
    hs = set(segments_from_boundaries(hyp, length))
    return PRF(len(rs & hs), len(hs), len(rs))


# --------------------------------------------------------------------------- Pk, WindowDiff
def boundary_string(boundaries: Iterable[int], n_units: int) -> str:
    """One symbol per unit, ``"1"`` where a boundary follows that unit (nltk's encoding).

    >>> boundary_string([1, 3], 4)
    '1010'
    """
    marks = ["0"] * n_units
    for b in set(boundaries):
        if 0 < b < n_units:
            marks[b - 1] = "1"
    return "".join(marks)


def default_window(ref: Iterable[int], n_units: int) -> int:
    """Half the mean reference segment length in units, rounded, at least 1."""
    n_seg = len(segments_from_boundaries(ref, n_units))
    return max(1, round(n_units / (2.0 * max(1, n_seg))))


def pk(ref: Iterable[int], hyp: Iterable[int], n_units: int, k: int | None = None) -> float:
    """Pk (Beeferman et al.) via ``nltk.metrics.segmentation.pk``; 0.0 for under 2 units.

    >>> pk([2], [2], 4), pk([2], [], 4)  # k = 1: "0100" vs "0000" differ in 1 of 4 windows
    (0.0, 0.25)
    """
    from nltk.metrics.segmentation import pk as nltk_pk

    ref, hyp = list(ref), list(hyp)
    if n_units < 2:
        return 0.0
    k = k or default_window(ref, n_units)
    k = min(k, n_units)
    return float(nltk_pk(boundary_string(ref, n_units), boundary_string(hyp, n_units), k))


def windowdiff(ref: Iterable[int], hyp: Iterable[int], n_units: int,
               k: int | None = None) -> float:
    """WindowDiff (Pevzner & Hearst) via ``nltk.metrics.segmentation.windowdiff``.

    >>> windowdiff([2], [1, 2], 4)  # k = 1: "0100" vs "1100" differ in 1 of 4 windows
    0.25
    """
    from nltk.metrics.segmentation import windowdiff as nltk_wd

    ref, hyp = list(ref), list(hyp)
    if n_units < 2:
        return 0.0
    k = k or default_window(ref, n_units)
    k = min(k, n_units)
    return float(nltk_wd(boundary_string(ref, n_units), boundary_string(hyp, n_units), k))


# --------------------------------------------------------------------------- roles
@dataclass(frozen=True)
class RoleAgreement:
    """Agreement of per-unit role labels; ``confusion[i][j]``: reference ROLES[i], hyp ROLES[j]."""

    n: int
    accuracy: float
    macro_f1: float
    kappa: float | None
    confusion: list[list[int]] = field(default_factory=list)


def role_agreement(ref: Sequence[str], hyp: Sequence[str],
                   labels: Sequence[str] = ROLES) -> RoleAgreement:
    """Accuracy, macro-F1 over ``labels`` and Cohen's kappa (scikit-learn) of two label lists.

    Macro-F1 averages the labels present in either list (a label neither side uses would add
    an arbitrary 0 or 1). Kappa is ``None`` when it is undefined (one identical label only).

    >>> r = role_agreement(["meta", "solve", "solve", "other"], ["meta", "solve", "meta", "other"])
    >>> r.accuracy, round(r.macro_f1, 4), round(r.kappa, 4)
    (0.75, 0.7778, 0.6364)
    """
    import warnings

    from sklearn.metrics import cohen_kappa_score, confusion_matrix, f1_score

    if len(ref) != len(hyp):
        raise ValueError(f"role lists differ in length: {len(ref)} vs {len(hyp)}")
    unknown = (set(ref) | set(hyp)) - set(labels)
    if unknown:
        raise ValueError(f"unknown role label(s) {sorted(unknown)}; use {list(labels)}")
    if not ref:
        return RoleAgreement(0, 0.0, 0.0, None, [[0] * len(labels) for _ in labels])
    present = [lab for lab in labels if lab in set(ref) | set(hyp)]
    acc = sum(a == b for a, b in zip(ref, hyp)) / len(ref)
    macro = float(f1_score(ref, hyp, labels=present, average="macro", zero_division=0))
    kappa: float | None
    if len(present) < 2:
        kappa = None
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            k = float(cohen_kappa_score(ref, hyp, labels=list(labels)))
        kappa = None if math.isnan(k) else k
    cm = confusion_matrix(ref, hyp, labels=list(labels)).tolist()
    return RoleAgreement(len(ref), acc, macro, kappa, cm)


# --------------------------------------------------------------------------- ranking
def ranking_accuracy(aligned: Sequence[float], perturbed: Sequence[float]) -> float:
    """Share of pairs (aligned_i, perturbed_i) where the aligned one scores higher; ties 1/2.

    >>> ranking_accuracy([1.0, 1.0, 0.5], [0.5, 1.0, 0.7])
    0.5
    """
    if len(aligned) != len(perturbed):
        raise ValueError("ranking_accuracy needs paired scores of equal length")
    if not aligned:
        raise ValueError("ranking_accuracy needs at least one pair")
    won = sum(1.0 if a > b else 0.5 if a == b else 0.0 for a, b in zip(aligned, perturbed))
    return won / len(aligned)


def roc_auc(positive: Sequence[float], negative: Sequence[float]) -> float | None:
    """ROC AUC of scores, positives = aligned students (scikit-learn); None without both classes.

    >>> roc_auc([0.9, 0.5], [0.5, 0.1])
    0.875
    """
    if not positive or not negative:
        return None
    from sklearn.metrics import roc_auc_score

    y = [1] * len(positive) + [0] * len(negative)
    return float(roc_auc_score(y, list(positive) + list(negative)))


def spearman(x: Sequence[float], y: Sequence[float]) -> float | None:
    """Spearman rank correlation (average ranks for ties); None when either side is constant.

    >>> spearman([0, 1, 2], [0.0, 0.5, 0.5])
    0.8660254037844387
    """
    if len(x) != len(y) or len(x) < 2:
        return None

    def ranks(v: Sequence[float]) -> list[float]:
        order = sorted(range(len(v)), key=lambda i: v[i])
        out = [0.0] * len(v)
        k = 0
        while k < len(order):
            m = k
            while m + 1 < len(order) and v[order[m + 1]] == v[order[k]]:
                m += 1
            for t in range(k, m + 1):
                out[order[t]] = (k + m) / 2
            k = m + 1
        return out

    rx, ry = ranks(x), ranks(y)
    mx, my = sum(rx) / len(rx), sum(ry) / len(ry)
    cov = sum((a - mx) * (b - my) for a, b in zip(rx, ry))
    vx = sum((a - mx) ** 2 for a in rx)
    vy = sum((b - my) ** 2 for b in ry)
    if vx == 0 or vy == 0:
        return None
    return cov / math.sqrt(vx * vy)


def mean(values: Iterable[float | None]) -> float | None:
    """Mean of the non-None values, or None if there are none."""
    vals = [v for v in values if v is not None]
    return sum(vals) / len(vals) if vals else None


# --------------------------------------------------------------------------- registry
@dataclass(frozen=True)
class Metric:
    """A registered metric: its function, whether higher is better, and what it measures."""

    fn: Callable[..., Any]
    higher_is_better: bool
    doc: str


METRICS: dict[str, Metric] = {
    "boundary_prf": Metric(boundary_prf, True, "boundary P/R/F1 with a tolerance"),
    "segment_prf": Metric(segment_prf, True, "exact-segment P/R/F1"),
    "pk": Metric(pk, False, "Pk on sentence units (nltk)"),
    "windowdiff": Metric(windowdiff, False, "WindowDiff on sentence units (nltk)"),
    "role_agreement": Metric(role_agreement, True, "role accuracy, macro-F1, Cohen's kappa"),
    "ranking_accuracy": Metric(ranking_accuracy, True, "paired aligned > perturbed share"),
    "roc_auc": Metric(roc_auc, True, "ROC AUC aligned vs perturbed"),
    "spearman": Metric(spearman, True, "Spearman rank correlation"),
}

#: report columns whose lower values are better (everything else: higher is better)
LOWER_IS_BETTER_COLUMNS: frozenset[str] = frozenset(
    {"pk", "windowdiff", "step_count_mae", "seconds"}
)


def get_metric(name: str) -> Metric:
    """A metric by registry name."""
    try:
        return METRICS[name]
    except KeyError:
        raise ValueError(f"unknown metric {name!r}; choose one of {sorted(METRICS)}") from None


def higher_is_better(column: str) -> bool:
    """Direction of a report column, for ``compare`` (lower is better for errors and Pk/WD)."""
    return column not in LOWER_IS_BETTER_COLUMNS
