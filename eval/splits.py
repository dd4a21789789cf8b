"""Train / dev / test splits by problem, one rule for training data and the evaluation tasks.

Why one module: the segmenter's and describer's training data and the ``gsrm-eval`` tasks must
agree on which problems are held out, or the reported figures measure memory. A problem's split
is a stable hash of its normalised text, with fractions per source; the data sets that come
with a fixed evaluation file keep it as ``test`` (GSM8K socratic items >= 1000, PRM800K
``phase1_test``, PRMBench ``prm800k_test_*``) and are not hashed.

Rules, thresholds and data mixes are chosen on ``dev``; ``test`` is run to report only.

Example::

    >>> split_of("What is 2 + 3?", "champ") in ("train", "dev", "test")
    True
    >>> split_of("What is 2 + 3?", "champ") == split_of("  what is 2 +  3? ", "champ")
    True
"""

from __future__ import annotations

import hashlib
from typing import Literal

Split = Literal["train", "dev", "test"]
SPLITS: tuple[Split, ...] = ("train", "dev", "test")

#: (dev fraction, test fraction) per source; sources without a fixed test file hold out more
FRACTIONS: dict[str, tuple[float, float]] = {
    "champ": (0.2, 0.4),   # 270 problems: ~54 dev, ~108 test
    "bbm": (0.1, 0.2),     # 2,186 traces over five tasks
    "math": (0.05, 0.05),
    "gsm8k": (0.05, 0.05),  # GSM8K train and socratic items < 1000; items >= 1000 are test
    "prm800k": (0.1, 0.0),  # phase1_train problems; phase1_test is the test file
    "prmbench": (0.1, 0.0),  # prm800k_train_* files; prm800k_test_* are the test files
}
DEFAULT_FRACTIONS = (0.05, 0.05)


def problem_hash(problem: str) -> float:
    """A stable number in [0, 1] for the normalised problem text (case and spacing ignored)."""
    norm = " ".join(problem.lower().split())
    return int(hashlib.sha256(norm.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF


def split_of(problem: str, source: str) -> Split:
    """The split of ``problem`` within ``source`` (see ``FRACTIONS``)."""
    dev, test = FRACTIONS.get(source, DEFAULT_FRACTIONS)
    u = problem_hash(problem)
    if u < test:
        return "test"
    if u < test + dev:
        return "dev"
    return "train"
