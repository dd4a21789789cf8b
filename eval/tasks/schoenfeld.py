"""``schoenfeld-r1``: DeepSeek-R1 reasoning traces with human episode labels (dev only).

Data: the public repository ``MingLiiii/Schoenfeld_Reasoning`` (EMNLP 2025): 38 DeepSeek-R1
responses to SAT math questions (``responses_original/SAT_deepseekR1_results.json``), every
sentence labelled with a Schoenfeld episode (``responses_labeled/*.json``, ``gt-class-2``:
Read, Analyze, Plan, Implement, Explore, Verify, Monitor). It has no licence file, so it is
never copied into this repository and never trained on: it is read by path (``--schoenfeld
DIR`` or ``$GSRM_SCHOENFELD``, the repository's checkout) and used to measure, on the kind of
trace our users distil, the choices made on the other data sets' dev splits. The task is
skipped when the path is absent.

**Move boundaries from episodes.** The trace is the response up to ``</think>`` (the reasoning a
GSRM decomposes; the summary after it is not labelled). Each labelled sentence is located in
it (in order; the response keeps its paragraphs), and a step begins where the sentence episode
changes. A ``Monitor`` sentence ("Hmm, right.", "Let me see.") is a short interjection that
announces the next move, so it joins the episode that follows it (a trailing one joins the
episode before it); runs of one episode are one step. This gives about 39 steps for a 4,700-character trace (about 21 paragraphs).
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from eval.segmentation import RefSpan
from eval.tasks.base import DataMissing, Loaded, TaskContext, take
from eval.tasks.segtask import SegItem, SegmentationTask

ORIGINAL = Path("responses_original") / "SAT_deepseekR1_results.json"
LABELED = Path("responses_labeled")


def schoenfeld_root(ctx: TaskContext) -> Path:
    """The checkout of the Schoenfeld repository: ``ctx.schoenfeld``, else the environment."""
    given = getattr(ctx, "schoenfeld", None) or os.environ.get("GSRM_SCHOENFELD")
    if not given:
        raise DataMissing("no Schoenfeld_Reasoning checkout: pass --schoenfeld DIR or set "
                          "GSRM_SCHOENFELD (github.com/MingLiiii/Schoenfeld_Reasoning)")
    root = Path(given).expanduser()
    if not (root / ORIGINAL).is_file() or not (root / LABELED).is_dir():
        raise DataMissing(f"{root} does not hold {ORIGINAL} and {LABELED}/")
    return root


def _locate(text: str, sentence: str, cursor: int) -> tuple[int, int] | None:
    """The span of ``sentence`` in ``text`` at or after ``cursor`` (white space may differ)."""
    k = text.find(sentence, cursor)
    if k >= 0:
        return k, k + len(sentence)
    words = sentence.split()
    if not words:
        return None
    pattern = r"\s+".join(re.escape(w) for w in words)
    m = re.compile(pattern).search(text, cursor)
    return (m.start(), m.end()) if m else None


def episode_starts(labels: list[str]) -> list[int]:
    """Indices of the sentences that open a step: an episode change, Monitor joining the next.

    >>> episode_starts(["Read", "Read", "Monitor", "Plan", "Implement", "Monitor"])
    [0, 2, 4]
    """
    eff: list[str] = [""] * len(labels)
    following = None
    for i in range(len(labels) - 1, -1, -1):
        if labels[i] != "Monitor":
            following = labels[i]
        eff[i] = labels[i] if labels[i] != "Monitor" else (following or "")
    for i in range(len(eff)):  # trailing Monitors (nothing follows) stay with what precedes
        if not eff[i]:
            eff[i] = eff[i - 1] if i else "Monitor"
    return [i for i in range(len(eff)) if i == 0 or eff[i] != eff[i - 1]]


def load_schoenfeld(root: Path, limit: int | None = None) -> Loaded[SegItem]:
    """The labelled responses as segmentation items, in file-name order."""
    problems: list[str] = []
    original = {r["Question ID"]: r for r in json.loads((root / ORIGINAL).read_text("utf-8"))}
    items: list[SegItem] = []
    files = sorted((root / LABELED).glob("*.json"), key=lambda p: (len(p.stem), p.stem))
    for f in files:
        rec = json.loads(f.read_text("utf-8"))
        qid = rec.get("Question ID")
        if qid not in original:
            problems.append(f"{f}: field 'Question ID': {qid!r} not in {ORIGINAL}; skipped")
            continue
        # the reasoning is the text before </think> (what the GSRM decomposes); the summary
        # after it carries no episode labels
        text = original[qid]["deepseek-reasoner (response)"].split("</think>", 1)[0].rstrip()
        sents = rec.get("data") or []
        spans: list[tuple[int, int]] = []
        cursor = 0
        for k, s in enumerate(sents):
            if cursor >= len(text):  # the labels go on past </think>: the rest is summary
                break
            found = _locate(text, s["text"].strip(), cursor)
            if found is None and "</think>" in s["text"]:  # the sentence that crosses it
                found = _locate(text, s["text"].split("</think>", 1)[0].strip(), cursor)
            if found is None:
                problems.append(f"{f}: data[{k}].text not found in the response; skipped")
                spans = []
                break
            spans.append(found)
            cursor = found[1]
        if not spans:
            continue
        sents = sents[: len(spans)]
        starts = episode_starts([s["gt-class-2"] for s in sents])
        ref: list[RefSpan] = []
        for j, i in enumerate(starts):
            end_sent = (starts[j + 1] if j + 1 < len(starts) else len(spans)) - 1
            ref.append(RefSpan(start=spans[i][0], end=spans[end_sent][1]))
        items.append(SegItem(id=f"schoenfeld-{f.stem}", problem=original[qid]["Instruction"],
                             reasoning=text, spans=ref))
    return Loaded(take(items, limit), problems, len(items))


class SchoenfeldR1(SegmentationTask):
    name = "schoenfeld-r1"
    description = ("DeepSeek-R1 SAT traces, steps from human episode labels (dev only, "
                   "optional: --schoenfeld DIR)")
    max_new_tokens = 1024

    def load(self, ctx: TaskContext) -> Loaded[SegItem]:
        return load_schoenfeld(schoenfeld_root(ctx), ctx.limit)
