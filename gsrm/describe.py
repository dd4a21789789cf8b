r"""Describe each step span: span -> meta-reasoning / sub-problem / answer (stage 2 of 2).

Why per span: once the segmenter has fixed where the steps are (``gsrm.segment``), writing
the three parts of a step is a short, independent generation (~60 tokens) per span, and all
spans of all traces decode together in one continuous batch; nothing can loop across steps,
skip a step or invent one, and every step keeps the span it describes.

The LM gets the problem and the span's text as the "reasoning to decompose" (the prompt the
shipped describer adapter, ``gsrm/adapters/describer``, was trained on, one span per example:
``training.descdata``); its first step's three parts are kept (the completion is cut at the
second step or the final-answer line, ``DESCRIBE_STOP``). A span whose completion has no parsable first step
keeps its span and gets empty parts, and the structure's warnings say which steps.

Example::

    >>> from gsrm.structure import Step
    >>> first_step("[Meta-reasoning 1]: m\n[Sub-problem 1]: q?\n[Answer 1]: 5\n[Meta")
    (Step(meta='m', subproblem='q?', answer='5', span=None), [])
"""

from __future__ import annotations

from collections.abc import Sequence

from gsrm.backends import Backend
from gsrm.parse import parse_structure
from gsrm.prompts import build_messages
from gsrm.segment import Segmenter, Span
from gsrm.structure import Generation, Step, Structure

DESCRIBE_MAX_NEW_TOKENS = 128
"""Budget per span: a step's three lines are 40-80 tokens; a longer completion is cut."""
DESCRIBE_STOP: tuple[str, ...] = ("\n[Meta-reasoning 2]", "\nSo the final answer")
MAX_SPAN_CHARS = 4000
"""A span longer than this is described from its first and last parts (its middle elided)."""


def span_text(reasoning: str, span: Span, limit: int = MAX_SPAN_CHARS) -> str:
    """The text the describer reads for ``span`` (middle elided past ``limit`` characters).

    >>> span_text("abcdefghij", (0, 10), limit=6)
    'abc … hij'
    """
    text = reasoning[span[0]:span[1]]
    if len(text) <= limit:
        return text
    half = limit // 2
    return f"{text[:half]} … {text[-half:]}"


def first_step(text: str) -> tuple[Step, list[str]]:
    """The first step of a completion, and warnings when it is missing or incomplete."""
    parsed = parse_structure(text)
    if not parsed.steps:
        return Step(), ["no step could be parsed from the describer's completion"]
    step = parsed.steps[0]
    # a completion cut by the budget can end in the next step's partial tag ("\n[Meta")
    step = step.model_copy(update={k: step.part(k).split("\n[")[0].strip()
                                   for k in ("meta", "subproblem", "answer")})
    warns = [] if step.is_complete else ["the describer's step is missing a part"]
    return step, warns


def describe_many(backend: Backend, items: Sequence[tuple[str, str, Sequence[Span]]],
                  max_new_tokens: int = DESCRIBE_MAX_NEW_TOKENS) -> list[Structure]:
    """Structures for ``(problem, reasoning, spans)`` items: one generation per span, batched."""
    convs = []
    where: list[tuple[int, int]] = []
    for i, (problem, reasoning, spans) in enumerate(items):
        for k, span in enumerate(spans):
            convs.append(build_messages(problem, span_text(reasoning, span), backend.shots))
            where.append((i, k))
    gens: list[Generation] = backend.generate(convs, max_new_tokens, stop=DESCRIBE_STOP) \
        if convs else []
    out = [Structure(steps=[Step(span=s) for s in spans]) for _, _, spans in items]
    stats = [{"prompt": 0, "completion": 0, "budget": 0, "loop": 0} for _ in items]
    for (i, k), gen in zip(where, gens, strict=True):
        step, warns = first_step(gen.text)
        out[i].steps[k] = step.model_copy(update={"span": items[i][2][k]})
        out[i].warnings.extend(f"step {k + 1}: {w}" for w in warns)
        stats[i]["prompt"] += gen.prompt_tokens
        stats[i]["completion"] += gen.completion_tokens
        stats[i]["budget"] += int(gen.hit_max_new_tokens and not step.is_complete)
        stats[i]["loop"] += int(gen.stopped_in_loop)
    for s, st in zip(out, stats, strict=True):
        s.raw = None
        s.generation = Generation(
            backend=backend.name, model=backend.model_id, prompt_tokens=st["prompt"],
            completion_tokens=st["completion"], hit_max_new_tokens=st["budget"] > 0,
            stopped_in_loop=st["loop"] > 0)
        if st["budget"]:
            s.warnings.append(f"{st['budget']} step description(s) stopped at the token budget")
    return out


def decompose_two_stage(segmenter: Segmenter, backend: Backend,
                        items: Sequence[tuple[str, str]],
                        max_new_tokens: int = DESCRIBE_MAX_NEW_TOKENS) -> list[Structure]:
    """Segment every trace, then describe every span of every trace in one batch."""
    spans = segmenter.segment_many([r for _, r in items])
    return describe_many(backend, [(p, r, s) for (p, r), s in zip(items, spans, strict=True)],
                         max_new_tokens)
