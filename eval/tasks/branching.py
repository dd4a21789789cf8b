"""``branching-steps``: segmentation of constructed branching traces (PRM800K phase 1).

Why: the traces RLKD distils are not straight lines. A reasoner tries a step, notices it is
wrong ("Wait, that is not right."), and takes another; it returns to an earlier branch. PRM800K
phase 1 rates *alternative* next steps after a shared prefix, so such a trace can be built
from human-written steps: the prefix, a rejected next step (rating -1), a reflection (varied
wording, or none), then the chosen step, with several attempts chained. Line breaks are
removed, so neither a cue nor a line break gives a boundary away.

**Where steps begin** (DESIGN.md section 7): every human step of the chain is a step; the
rejected attempt is a step of its own; the reflection opens the step that retries (its
meta-reasoning), so the boundary is at the reflection, or at the chosen step when there is none.

The builder is shared with the segmenter's training data (``training.segdata``), which draws
reflections from ``REFLECTIONS_TRAIN``; this task uses the disjoint ``REFLECTIONS_TEST`` on the
held-out ``phase1_test`` problems (``--split dev``: ``REFLECTIONS_TRAIN`` on the dev problems of
``phase1_train``), so a figure here is not the memory of a phrase.

Example::

    >>> import random
    >>> tree = BranchTree("p", ["A is 1.", "B is 2.", "C is 3."], {1: ["B is 5."]})
    >>> steps = branch_steps(tree, random.Random(0), ["Wait, no."], max_branches=1, p_none=0)
    >>> steps
    ['A is 1.', 'B is 5.', 'Wait, no. B is 2.', 'C is 3.']
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from eval.splits import split_of
from eval.tasks.base import DataMissing, Loaded, TaskContext, require_file, take
from eval.tasks.segtask import SegItem, SegmentationTask
from eval.tasks.steps import PRM800K_TEST, PRM800K_TRAIN, one_line

#: reflections opening a retry; the training data's wording
REFLECTIONS_TRAIN: tuple[str, ...] = (
    "Wait, that's not right.", "Hmm, that doesn't look right.", "Actually, let me redo that.",
    "No, that's wrong.", "Hold on, I made a mistake there.", "Let me check that again.",
    "That can't be right.", "Wait.", "Hmm, let me reconsider.", "Let's try something else.",
    "Oops, that is incorrect.", "Wait, I think I messed up.", "Hmm.", "No wait.",
    "That doesn't seem to work.", "Let me rethink this step.", "Actually, no.",
    "Hmm, I don't think that's correct.", "Wait, let me go back.", "Scratch that.",
)
#: the evaluation's wording, disjoint from training
REFLECTIONS_TEST: tuple[str, ...] = (
    "Wait, that seems off.", "Hmm, something is wrong here.", "Let me double-check this.",
    "No, I need to fix that.", "Hmm, hold on.", "Wait a moment, that is a mistake.",
    "Let me try that again.", "That's not quite right.", "Actually, I should reconsider.",
    "Hmm, that can't be it.",
)
#: openers prefixed to the chosen step instead of a reflection sentence
OPENERS_TRAIN: tuple[str, ...] = ("Alternatively,", "Instead,", "On second thought,",
                                  "Another way:", "Rather,")
OPENERS_TEST: tuple[str, ...] = ("Let me instead say:", "A better idea:")


@dataclass
class BranchTree:
    """One problem's chosen chain and, per depth, the rejected alternatives after its prefix."""

    problem: str
    chain: list[str]
    rejected: dict[int, list[str]] = field(default_factory=dict)


def _lower_first(text: str) -> str:
    return text[:1].lower() + text[1:] if text[:1].isupper() and not text[:2].isupper() else text


def branch_steps(tree: BranchTree, rng: random.Random, reflections: Sequence[str],
                 openers: Sequence[str] = (), max_branches: int = 3, max_attempts: int = 2,
                 p_none: float = 0.15) -> list[str]:
    """The step texts of a branching trace built from ``tree`` (see the module docstring).

    Up to ``max_branches`` depths with rejected alternatives get 1..``max_attempts`` rejected
    attempts each, every attempt followed by a retry opened by a reflection (probability
    ``1 - p_none``; an opener prefixed to the retried step instead, when ``openers`` are
    given, a quarter of those times).
    """
    depths = sorted(d for d, alts in tree.rejected.items() if alts and d < len(tree.chain))
    chosen = set(rng.sample(depths, min(max_branches, len(depths))))

    def retry(step: str) -> str:
        u = rng.random()
        if u < p_none:
            return step
        if openers and u < p_none + (1 - p_none) / 4:
            return f"{rng.choice(openers)} {_lower_first(step)}"
        return f"{rng.choice(reflections)} {step}"

    steps: list[str] = []
    for d, step in enumerate(tree.chain):
        if d in chosen:
            alts = list(tree.rejected[d])
            rng.shuffle(alts)
            for k, wrong in enumerate(alts[: rng.randint(1, max_attempts)]):
                steps.append(retry(wrong) if k else wrong)
            step = retry(step)
        steps.append(step)
    return steps


def load_trees(path: Path) -> tuple[list[BranchTree], list[str]]:
    """A ``BranchTree`` per problem of a PRM800K phase-1 parquet file, in file order.

    The chain is the problem's solution chain (the ``eval.tasks.steps.load_prm800k`` rule);
    the rejected alternatives at depth d are the rows whose prior steps equal the chain's
    first d steps, rated -1, and whose text differs from the chain's step d.
    """
    from eval.tasks.steps import load_prm800k

    try:
        import pandas as pd
    except ImportError:
        raise DataMissing("reading parquet needs pandas and pyarrow: "
                          "pip install 'gsrm[eval]'") from None
    loaded = load_prm800k(path)
    df = pd.read_parquet(path, columns=["instruction", "responses", "next_response", "rating"])
    alts: dict[tuple[str, int], list[str]] = {}
    prefixes: dict[str, tuple[str, ...]] = {}
    for it in loaded.items:
        prefixes[it.problem] = tuple(it.reasoning[s.start:s.end] for s in it.spans)
    for row in df.itertuples(index=False):
        chain = prefixes.get(row.instruction)
        if chain is None or row.rating != -1 or not isinstance(row.next_response, str):
            continue
        prior = tuple(one_line(s) for s in row.responses)
        d = len(prior)
        nxt = one_line(row.next_response)
        if d < len(chain) and prior == chain[:d] and nxt and nxt != chain[d]:
            bucket = alts.setdefault((row.instruction, d), [])
            if nxt not in bucket:
                bucket.append(nxt)
    trees = []
    for it in loaded.items:
        chain = list(prefixes[it.problem])
        rej = {d: v for (p, d), v in alts.items() if p == it.problem}
        trees.append(BranchTree(it.problem, chain, rej))
    return trees, loaded.problems


class BranchingSteps(SegmentationTask):
    name = "branching-steps"
    description = ("PRM800K phase-1 test problems as branching traces (rejected attempt, "
                   "reflection, retry), line breaks removed")
    max_new_tokens = 640

    def load(self, ctx: TaskContext) -> Loaded[SegItem]:
        root = ctx.data_root
        if ctx.split == "test":
            path = require_file(root / PRM800K_TEST, "PRM800K phase 1 test")
            reflections, openers = REFLECTIONS_TEST, OPENERS_TEST
        else:
            path = require_file(root / PRM800K_TRAIN, "PRM800K phase 1 train")
            reflections, openers = REFLECTIONS_TRAIN, OPENERS_TRAIN
        trees, problems = load_trees(path)
        if ctx.split != "test":
            trees = [t for t in trees if split_of(t.problem, "prm800k") == ctx.split]
        items: list[SegItem] = []
        for k, tree in enumerate(trees):
            if not tree.rejected:
                continue
            rng = random.Random(f"{ctx.seed}:{k}")
            steps = branch_steps(tree, rng, reflections, openers)
            items.append(SegItem.from_steps(f"branching-{ctx.split}-{k}", tree.problem, steps))
        return Loaded(take(items, ctx.limit), problems, len(items))
