"""Training data for the step describer: one step span -> its meta-reasoning, sub-problem, answer.

Why per span: the two-stage GSRM (DESIGN.md section 7) asks the LM to describe one span at a
time (``gsrm.describe``), with the prompt of the describer's span format
(``gsrm.spanformat``: ``SpanFormat.messages(problem, span)``). The describer is trained on
exactly that job: each example's "reasoning" is one step's text, its target one step, in the
format named by ``--span-format`` (written to the data's manifest, then by ``gsrm-train sft``
to the adapter's ``run.json``, from which the backends read it). The default, ``tags`` (what
the shipped describer was trained on)::

    [Meta-reasoning 1]: Find how many eggs are left.
    [Sub-problem 1]: How many eggs are left?
    [Answer 1]: 9 eggs

``pqa`` (``Plan: / Question: / Answer:`` under a short one-step prompt) costs ~21 fewer
decoded and ~90 fewer prompt tokens per span; a describer trained on it was not shipped (README,
"Speed and memory": faster on GSM8K, less often complete on long math traces).

Where the parts come from:

- **Sub-problem and meta-reasoning wording** only from human text: GSM8K socratic
  sub-questions (items < 1000, train split), the meta-reasoning naming that question as a
  plan (``describe_meta``: "Find how many eggs Janet sells."). The other sources' wording is weak (the step's first
  sentence) and ``training.sft`` masks it: they teach the format and the answer.
- **Answer**: the step's result stated briefly, by the answer rule (``ANSWER_RULES``,
  ``--answer-rule``). ``short`` (the default, what the shipped describer was trained on:
  ``gsrm.calibrate.short_answer``): the value after the step's last "=" with the unit words
  that follow it ("72 eggs", "$18"), or, for a step with no calculation, its last sentence
  without its arithmetic, cut to ten words -- on the long-trace sources often a copy of the
  span. ``result`` (``gsrm.calibrate.result_answer``; tried and not kept, README "Brief
  answers in the data"): a boxed result, an "=" value that ends there, the last sentence's
  last formula or number ("$5$ ways"), else its last clause.
- **Span text** as the segmenter would give it: GSM8K socratic steps with and without a
  planning sentence in front (``training.segdata.plan_sentence``), checks and reflections
  of the branching traces, PRM800K lines, MATH paragraphs, BIG-Bench Mistake steps.

Every row also keeps the text of the step before its span (``context``; empty for a first
step), which a span format with ``previous`` (``tags-prev``) shows in the prompt; the others
ignore it.

Splits are by problem (``eval.splits``); only train-split problems are written as ``train``,
dev-split ones as ``validation``.

Example::

    >>> print(target_for("Find how many clips.", "How many clips?",
    ...                  short_answer("So 48/2 = 24 clips.")))
    [Meta-reasoning 1]: Find how many clips.
    [Sub-problem 1]: How many clips?
    [Answer 1]: 24 clips
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from gsrm.calibrate import result_answer, short_answer
from gsrm.spanformat import get_span_format
from training.data import SFTExample, weak_step
from training.segdata import SOURCES, StepTrace, plan_sentence

#: how a describer row's answer is read from its step's text (``--answer-rule``)
ANSWER_RULES: dict[str, Callable[[str], str]] = {"short": short_answer, "result": result_answer}
DEFAULT_ANSWER_RULE = "short"


def get_answer_rule(name: str) -> Callable[[str], str]:
    """The answer rule registered as ``name``; a clear error naming the known ones."""
    try:
        return ANSWER_RULES[name]
    except KeyError:
        raise ValueError(f"unknown answer rule {name!r}; known: {', '.join(ANSWER_RULES)}") \
            from None


def describe_meta(index: int, n_steps: int, question: str, rng: random.Random) -> str:
    """Meta-reasoning that names the step's sub-problem as a plan ("Find how many eggs are
    left."), from the human question.

    No position words ("First", "Finally"): the describer sees one span, not where it stands,
    and two decompositions of the same reasoning should word the same step the same way.

    A question that cannot be turned into a "find ..." object is kept as the question (an
    imperative sub-question such as "Simplify" as it is): no fixed prefix. (A prefix like
    "Answer this:" on a third of the rows taught the model an empty opener it fell back on
    for spans unlike GSM8K's, "[Meta-reasoning 1]: Answer this:" with nothing after it.)

    >>> describe_meta(1, 3, "How many eggs does Janet sell?", random.Random(0))
    'Work out how many eggs Janet sells.'
    >>> describe_meta(1, 3, "How much will Billy be paid in total?", random.Random(0))
    'Work out how much Billy will be paid in total.'
    >>> describe_meta(1, 3, "Why is the sky blue?", random.Random(0))
    'Why is the sky blue?'
    """
    from gsrm.plans import PLAN_VERBS, plan_body, plan_for

    if plan_body(question) is None:  # kept as the question: no verb drawn, as always (the
        return plan_for(question)     # rng stream, so the data of a seed, is unchanged)
    return plan_for(question, rng.choice(PLAN_VERBS))


def target_for(meta: str, subproblem: str, answer: str, span_format: str = "tags") -> str:
    """The one-step completion the describer is trained to write, in ``span_format``
    (``gsrm.spanformat``)."""
    return get_span_format(span_format).render(meta, subproblem, answer)


def socratic_examples(tr: StepTrace, rng: random.Random, span_format: str = "tags",
                      answer: Callable[[str], str] = short_answer) -> Iterator[SFTExample]:
    """Human-worded examples: one per step of a socratic item (questions are human)."""
    assert tr.questions is not None
    n = len(tr.steps)
    for k, (step, q) in enumerate(zip(tr.steps, tr.questions, strict=True)):
        if not q:
            continue
        span = step if rng.random() < 0.5 else f"{plan_sentence(q, k, n, rng)} {step}"
        yield SFTExample(id=f"{tr.id}:{k}", source="gsm8k-socratic",
                         split="train" if tr.split == "train" else "validation",
                         problem=tr.problem, reasoning=span,
                         target=target_for(describe_meta(k, n, q, rng), q, answer(step),
                                           span_format),
                         context=tr.steps[k - 1] if k else "", layout="span", n_steps=1)


def weak_examples(tr: StepTrace, rng: random.Random, per_trace: int = 2,
                  span_format: str = "tags", answer: Callable[[str], str] = short_answer
                  ) -> Iterator[SFTExample]:
    """Format-and-answer examples from boundary-only sources (wording masked in SFT)."""
    from training.data import weak_meta

    n = len(tr.steps)
    for k in sorted(rng.sample(range(n), min(per_trace, n))):
        step = tr.steps[k]
        sub, _ = weak_step(step)
        yield SFTExample(id=f"{tr.id}:{k}", source=tr.source,
                         split="train" if tr.split == "train" else "validation",
                         problem=tr.problem, reasoning=step,
                         target=target_for(weak_meta(k, n, step), sub, answer(step),
                                           span_format),
                         context=tr.steps[k - 1] if k else "", layout="span", n_steps=1)


#: examples per source (train split); the socratic ones are the only human wording
MIX: dict[str, int] = {"gsm8k-socratic": 1200, "prm800k": 400, "branching": 400, "math": 250,
                       "bbm": 250, "champ": 120, "prmbench-branch": 250}


def build(root: Path, mix: dict[str, int] | None = None, seed: int = 0,
          span_format: str = "tags", answer_rule: str = DEFAULT_ANSWER_RULE
          ) -> tuple[list[SFTExample], Counter[str], list[str]]:
    """Train and validation examples per ``mix`` (sampled with ``seed``), targets in
    ``span_format`` with answers by ``answer_rule``, and what was skipped."""
    get_span_format(span_format)
    answer = get_answer_rule(answer_rule)
    mix = MIX if mix is None else mix
    rng = random.Random(seed)
    problems: list[str] = []
    pools: dict[str, list[SFTExample]] = {}
    for name, reader in SOURCES.items():
        wanted = {s for s in mix if s == name or (name == "gsm8k" and s == "gsm8k-socratic")}
        if not wanted:
            continue
        for tr in reader(root, problems):
            if tr.split not in ("train", "dev"):
                continue
            r = random.Random(f"{seed}:{tr.id}")
            if name == "gsm8k":
                if tr.id.startswith("gsm8k-soc-"):
                    exs: Sequence[SFTExample] = list(socratic_examples(tr, r, span_format,
                                                                      answer))
                else:
                    continue
            else:
                exs = list(weak_examples(tr, r, span_format=span_format, answer=answer))
            for e in exs:
                pools.setdefault(e.source, []).append(e)
    out: list[SFTExample] = []
    counts: Counter[str] = Counter()
    for source, n in mix.items():
        rows = pools.get(source, [])
        train = [e for e in rows if e.split == "train"]
        val = [e for e in rows if e.split == "validation"]
        rng.shuffle(train)
        rng.shuffle(val)
        picked = train[:n] + val[: max(4, n // 20)]
        counts[f"{source}/train"] = min(n, len(train))
        counts[f"{source}/validation"] = len(picked) - counts[f"{source}/train"]
        out.extend(picked)
    rng.shuffle(out)
    return out, counts, problems
