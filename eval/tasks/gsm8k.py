"""``gsm8k-socratic``: steps, sub-problems and answers against GSM8K's human socratic steps.

Data: ``gsm8k/test_socratic.jsonl`` items with index >= 1000 (the last 319; items 0-999 are
used by ``gsrm.calibrate`` and never here). Each socratic line is ``sub-question ** step``
(parsed by ``gsrm.calibrate.parse_socratic``); the step texts are exactly the lines of the
plain GSM8K solution, so the trace is those lines joined by one space — with the line breaks
left in, one step per line would be trivially right.

Besides segmentation, for each human step the hypothesis step that covers most of it (via
the projection) is compared with it:

- ``subproblem_f1``: ``gsrm.judges.token_f1`` of the human sub-question and the step's
  sub-problem (0 when no step covers it), averaged per problem, then over problems;
- ``answer_acc``: the lexical judge's answer rule (numbers compared as numbers: the human
  step's value after its last "=") on the human step text and the step's answer, same
  averaging.

The reference row ``ref:last-sentence`` uses the problem's last sentence (its question) as
every sub-problem: a model-free floor for ``subproblem_f1`` (about 0.42 on the held-out
items).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel

from eval.metrics import mean
from eval.segmentation import ItemResult, best_overlap_step
from eval.tasks.base import (
    DataMissing,
    Loaded,
    ResultRow,
    TaskContext,
    read_jsonl,
    require_file,
    take,
    validate_row,
)
from eval.tasks.segtask import SegItem, SegmentationTask
from gsrm.calibrate import CALIBRATION_ITEMS, SOCRATIC_FILE, parse_socratic
from gsrm.judges import LexicalJudge, token_f1
from gsrm.structure import Structure
from gsrm.text import split_sentences

HELD_OUT_START = CALIBRATION_ITEMS  # items >= 1000 are the evaluation split


class _SocraticRow(BaseModel):
    question: str
    answer: str


def load_socratic(path: Any, limit: int | None = None, split: str = "test") -> Loaded[SegItem]:
    """Socratic items as segmentation items (bad lines reported, not raised).

    ``test``: the held-out items (index >= 1000); ``dev`` (or ``train``): items below 1000
    whose problem falls in that split (``eval.splits.split_of``, source ``gsm8k``).
    """
    from eval.splits import split_of

    problems: list[str] = []
    items: list[SegItem] = []
    for n, obj in read_jsonl(path, problems):
        index = n - 1  # line n holds item n-1 (the file has no blank lines)
        if (index < HELD_OUT_START) == (split == "test"):
            continue
        row = validate_row(_SocraticRow, obj, f"{path}:{n}", problems)
        if row is None:
            continue
        if split != "test" and split_of(row.question, "gsm8k") != split:
            continue
        parsed = parse_socratic(row.answer)
        if not parsed.steps:
            problems.append(f"{path}:{n}: no 'question ** step' lines in the answer")
            continue
        items.append(SegItem.from_steps(
            f"gsm8k-test-{index}", row.question, [s.text for s in parsed.steps],
            questions=[s.question for s in parsed.steps]))
    return Loaded(take(items, limit), problems, len(items))


def last_sentence(problem: str) -> str:
    """The problem's last sentence (in GSM8K, its question)."""
    sents = split_sentences(problem)
    return sents[-1] if sents else problem


class GSM8KSocratic(SegmentationTask):
    name = "gsm8k-socratic"
    description = ("GSM8K held-out socratic steps (items >= 1000), line breaks removed: "
                   "segmentation, sub-problem token F1, answer accuracy")
    # a step of the fine-tuned model's output is 55-75 tokens (human-like sub-problems, which
    # its meta-reasoning repeats) and the held-out solutions have up to 8 steps: 448 tokens cut
    # 8 in 150 honest decompositions mid-step (the 2026-11-30 adapter); the library default is
    # 1024
    max_new_tokens = 640

    def load(self, ctx: TaskContext) -> Loaded[SegItem]:
        path = require_file(ctx.data_root / SOCRATIC_FILE, "GSM8K socratic test file")
        loaded = load_socratic(path, ctx.limit, ctx.split)
        if not loaded.items and not loaded.problems:
            raise DataMissing(f"no held-out items (index >= {HELD_OUT_START}) in {path}")
        return loaded

    def extra_metrics(self, items: Sequence[SegItem], structures: Sequence[Structure],
                      results: Sequence[ItemResult]) -> dict[str, Any]:
        judge = LexicalJudge()
        sub_means: list[float] = []
        ans_means: list[float] = []
        for it, s, r in zip(items, structures, results):
            questions = it.questions or []
            paired = [best_overlap_step(span, r.projection) for span in it.spans]
            subs = [token_f1(q, s.steps[h].subproblem) if h is not None else 0.0
                    for q, h in zip(questions, paired)]
            texts = [it.reasoning[sp.start:sp.end] for sp in it.spans]
            asked = [(t, s.steps[h].answer) for t, h in zip(texts, paired)
                     if h is not None and s.steps[h].answer.strip()]
            verdicts = iter(judge.judge_many(asked, "answer")) if asked else iter(())
            answers = [float(next(verdicts).match)
                       if h is not None and s.steps[h].answer.strip() else 0.0
                       for h in paired]
            if subs:
                sub_means.append(sum(subs) / len(subs))
            if answers:
                ans_means.append(sum(answers) / len(answers))
        out = {"subproblem_f1": mean(sub_means), "answer_acc": mean(ans_means)}
        out.update(self.judge_agreement(items, structures, results))
        return out

    def judge_agreement(self, items: Sequence[SegItem], structures: Sequence[Structure],
                        results: Sequence[ItemResult]) -> dict[str, Any]:
        """Sub-problem / answer agreement under the default judge (the reward's own matcher).

        Per human step, the covering hypothesis step's sub-problem is judged against the human
        sub-question and its answer against the step's brief answer
        (``gsrm.calibrate.brief_answer``: the sentence without its arithmetic) for
        ``answer_agree``, and against the step's result stated briefly
        (``gsrm.calibrate.short_answer``: "72 clips", the form the describer is asked for)
        for ``answer_agree_short``; a step with no covering hypothesis counts as 0. Both are
        reported because each reference favours one answer style: a copied sentence scores
        high on the first, a brief result on the second.
        """
        from gsrm.calibrate import brief_answer, short_answer
        from gsrm.judges import DEFAULT_JUDGE, get_judge

        if getattr(self, "_judge", None) is None:
            self._judge = get_judge(DEFAULT_JUDGE)
        sub_pairs: list[tuple[str, str]] = []
        ans_pairs: list[tuple[str, str]] = []
        short_pairs: list[tuple[str, str]] = []
        slots: list[tuple[int, bool]] = []  # (item index, has hypothesis)
        for k, (it, s, r) in enumerate(zip(items, structures, results)):
            for q, span in zip(it.questions or [], it.spans):
                h = best_overlap_step(span, r.projection)
                slots.append((k, h is not None))
                if h is not None:
                    sub_pairs.append((q, s.steps[h].subproblem or "-"))
                    text = it.reasoning[span.start:span.end]
                    ans_pairs.append((brief_answer(text), s.steps[h].answer or "-"))
                    short_pairs.append((short_answer(text), s.steps[h].answer or "-"))
        subs = iter(self._judge.judge_many(sub_pairs, "subproblem")) if sub_pairs else iter(())
        anss = iter(self._judge.judge_many(ans_pairs, "answer")) if ans_pairs else iter(())
        shorts = iter(self._judge.judge_many(short_pairs, "answer")) if short_pairs \
            else iter(())
        per: dict[str, dict[int, list[float]]] = {"sub": {}, "ans": {}, "short": {}}
        for k, has in slots:
            for key, verdicts in (("sub", subs), ("ans", anss), ("short", shorts)):
                per[key].setdefault(k, []).append(float(next(verdicts).match) if has else 0.0)

        def item_mean(key: str) -> float:
            return mean(sum(v) / len(v) for v in per[key].values())

        return {"subproblem_agree": item_mean("sub"), "answer_agree": item_mean("ans"),
                "answer_agree_short": item_mean("short")}

    def reference_rows(self, items: Sequence[SegItem], ctx: TaskContext) -> list[ResultRow]:
        per_item = []
        for it in items:
            last = last_sentence(it.problem)
            f = [token_f1(q, last) for q in it.questions or []]
            if f:
                per_item.append(sum(f) / len(f))
        return [ResultRow(system="ref:last-sentence",
                          metrics={"n": len(per_item), "subproblem_f1": mean(per_item)},
                          notes=["the problem's last sentence used as every sub-problem"])]
