r"""Describe each step span: span -> meta-reasoning / sub-problem / answer (stage 2 of 2).

Why per span: once the segmenter has fixed where the steps are (``gsrm.segment``), writing
the three parts of a step is a short, independent generation (~60 tokens) per span, and all
spans of all traces decode together in one continuous batch; nothing can loop across steps,
skip a step or invent one, and every step keeps the span it describes.

The LM gets the problem and the span's text in the prompt of its span format
(``gsrm.spanformat``: the one the backend's adapter was trained on, ``Backend.span_format``;
the default describer, ``gsrm/adapters/describer-qa``, writes a ``Question:`` and an
``Answer:`` line and its plan is derived from the question, ``describer`` writes the canonical
``[Meta-reasoning 1]:`` lines; one span per example: ``training.descdata``); its first step's
parts are kept (the completion is cut at a second step, ``SpanFormat.stop``). Spans with the
same prompt are described once (``describe_many``).
With ``Backend.prefix_warmup`` (the OpenVINO backend's default) each problem's prompt is
prefilled once before the batch (``warm_prefixes``), so all spans of a problem share it in
the engine's prefix cache.

Format repair (``repair_prefix``): a completion that ends before the step's next part (the
small model sometimes ends its turn right after the meta-reasoning line on LaTeX-heavy spans;
a loop inside a line is cut there by the safeguards) is continued with its text and the next
part's header as an assistant prefill (``gsrm.backends.base.continues_reply``), at most twice per
span, each continuation with its own small budget (``REPAIR_MAX_NEW_TOKENS``). It only adds
the missing header; the model writes every part's words. It lives here, not in a backend, so
every backend does the same, and its settings are in the decomposition's cache identity. A
span whose completion still has no complete step keeps its span and the parts it has, and the
structure's warnings say which steps.

Past the budget (``REPAIR_AT_BUDGET``): a completion that ran to its token budget before its
step was complete gets the same repair: what it wrote stays (its last part cut where the budget
cut it; a header the budget cut is written whole, ``REPAIR_CUT_HEADER``) and the next part's
header is appended. Why: on formula-heavy spans the describer
copies a long formula into the meta-reasoning and again into the sub-problem, and the budget
ends it before the answer; described again, it writes the same copy (greedy decoding), so a
fresh retry paid a second full budget, in series, for nothing (on the dev splits, README
"Speed and memory"), while a continuation of at most ``REPAIR_MAX_NEW_TOKENS`` writes the
missing answer. A loop inside a line is cut by the safeguards before this (it is not a budget
cut). The structure's warnings name every step whose completion was cut by the budget.

Retry (``RETRY_ROUNDS``): a span whose completion (after the repair) has no step at all, or
ran to its token budget before its step was complete, is described again, once, in a fresh
batch of only such spans, and the structure's warnings say which. When several had no step
the engine is restarted first (``RESET_AFTER_NO_STEP``, ``Backend.reset``) and, if it had
state to drop, every completion from the first step-less one on is written again
(``_after_fault``). Why: OpenVINO GenAI's pipeline, after long earlier calls, has returned
garbage from one point of a call to its end (much of it with no step, some parsing but
wrong), while a fresh pipeline described the same spans well (eval/README.md, "engine
fault"); and its int8 kernels give a prompt slightly different numbers in another batch,
which is enough to tip a description that restates a formula into a loop or out of one. A
fresh call recovers from both; a deterministic backend writes the same text again (the cost
of a few spans). A reward must not silently lose those steps.

Example::

    >>> from gsrm.structure import Step
    >>> first_step("[Meta-reasoning 1]: m\n[Sub-problem 1]: q?\n[Answer 1]: 5\n[Meta")
    (Step(meta='m', subproblem='q?', answer='5', span=None), [])
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from typing import Any

from gsrm.backends import Backend
from gsrm.prompts import Message
from gsrm.segment import Segmenter, Span
from gsrm.spanformat import SpanFormat, get_span_format
from gsrm.structure import Generation, Step, Structure

TAGS = get_span_format("tags")

DESCRIBE_MAX_NEW_TOKENS = TAGS.max_new_tokens
"""Budget per span of the three-line formats (``SpanFormat.max_new_tokens``): a step's three
lines are 40-80 tokens, but on a formula-heavy span the meta-reasoning and the sub-problem may
each restate a long formula (128 cut ~1% of the long-trace spans on the dev splits before
their answer); a longer completion is cut. The two-line ``qa`` format has its own, 128."""
DESCRIBE_STOP: tuple[str, ...] = TAGS.stop
"""Stop strings of the ``tags`` format: a described span is one step, so any second
meta-reasoning line ends it (also one numbered 1 again, which a loop writes), as does the
final-answer line. Each format has its own (``SpanFormat.stop``)."""
REPAIR_ROUNDS = 2
"""Format-repair continuations per span (0 turns the repair off): meta -> sub-problem -> answer."""
REPAIR_MAX_NEW_TOKENS = 64
"""Budget of one repair continuation: the missing parts are one or two short lines. Fixed per
continuation (not what the first round left) so a span's result never depends on its batch."""
REPAIR_AT_BUDGET = True
"""Whether the format repair also continues completions cut by the budget (see above)."""
REPAIR_CUT_HEADER = True
"""Whether that repair writes again, whole, a header the budget cut (``repair_prefix``'s
``cut``); in the cache identity because it changes what such a step says."""
AT_BUDGET_WARNING = "the describer's completion ran to the token budget"
"""Start of a step's warning when its completion was cut by the budget and its missing parts
were asked for after the cut; what scripts match to count first completions at the budget."""
RETRY_ROUNDS = 1
"""Fresh-batch retries of spans whose completion has no step at all or ran to its budget
before its step was complete (0 turns it off)."""
BUDGET_WARNING = "step description(s) stopped at the token budget"
"""End of a structure's summary warning, after the count of spans left cut by the budget
(``describe_many``); what scripts match to count them."""
MAX_SPAN_CHARS = 4000
"""A span longer than this is described from its first and last parts (its middle elided)."""
NO_STEP = "had no step"
"""``_failure``'s reason for a completion with no step at all (its warning quotes how it
began)."""
SHOWN_CHARS = 40
"""Characters of a step-less completion quoted in its "described again" warning."""
RESET_AFTER_NO_STEP = 2
"""The retry restarts the engine (``Backend.reset``) first when at least this many
completions of one call had no step (and, when the engine had state to drop, describes again
every completion from the first such one on: ``_after_fault``). Why: a healthy engine rarely
writes one, while the OpenVINO pipeline's fault (eval/README.md) wrote hundreds in one call,
and retried in the same pipeline some failed again. A single one is retried without a
restart, which costs seconds (a model load)."""
RESTART_NOTE = "after an engine restart"
"""Ends the "described again" warning of spans retried on a restarted engine."""
AFTER_FAULT = "came after the engine's first step-less one"
"""Why a completion that parsed is described again on a restarted engine: it was written
from the point where the engine began to fail (``_retry``)."""


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


def first_step(text: str, fmt: SpanFormat = TAGS) -> tuple[Step, list[str]]:
    """The first step of a completion in format ``fmt``, and warnings when it is missing or
    incomplete."""
    step = fmt.parse(text)
    if step is None:
        return Step(), ["no step could be parsed from the describer's completion"]
    warns = [] if step.is_complete else ["the describer's step is missing a part"]
    return step, warns


def repair_prefix(text: str, fmt: SpanFormat = TAGS, cut: bool = False) -> str | None:
    r"""The completion with the next missing part's header appended, or None when there is
    nothing a header can fix (every part is there, a part's header is present but empty, or
    the text has no complete first line: the meta-reasoning, or ``qa``'s question).

    ``cut``: the budget ended the completion, so a header it ends in (whole or in part, with
    no words after it) was cut before its words, not left empty by the model: that header is
    written again whole and continued. Why: a completion that restates a long formula in two
    parts can reach the budget exactly at the answer's tag, and described again it writes the
    same (greedy decoding), so the step lost its answer.

    >>> repair_prefix("[Meta-reasoning 1]: Find $x$")
    '[Meta-reasoning 1]: Find $x$\n[Sub-problem 1]:'
    >>> repair_prefix("[Meta-reasoning 1]: m\n[Sub-problem 1]: q?\n")
    '[Meta-reasoning 1]: m\n[Sub-problem 1]: q?\n[Answer 1]:'
    >>> repair_prefix("[Meta-reasoning 1]: m\n[Sub-problem 1]:") is None
    True
    >>> repair_prefix("[Meta-reasoning 1]: m\n[Sub-problem 1]: q?\n[Answer 1", cut=True)
    '[Meta-reasoning 1]: m\n[Sub-problem 1]: q?\n[Answer 1]:'
    >>> repair_prefix("Plan: m", get_span_format("pqa"))
    'Plan: m\nQuestion:'
    >>> repair_prefix("Question: How many?", get_span_format("qa"))
    'Question: How many?\nAnswer:'
    """
    body = text.rstrip()
    if cut:
        body = _drop_cut_header(body, fmt)
    step, _ = first_step(body, fmt)
    if step.is_complete or not step.part(fmt.parts[0]):
        return None
    for mark, header, part in zip(fmt.marks[1:], fmt.headers[1:], fmt.parts[1:], strict=True):
        if mark not in body:
            return f"{body}\n{header}"
        if not step.part(part):
            return None
    return None


def _drop_cut_header(body: str, fmt: SpanFormat) -> str:
    r"""``body`` without a last line that is the next parts' header, whole or its start, and
    nothing else (where the budget cut a completion); unchanged otherwise.

    >>> _drop_cut_header("[Meta-reasoning 1]: m\n[Sub-pr", TAGS)
    '[Meta-reasoning 1]: m'
    >>> _drop_cut_header("[Meta-reasoning 1]: m\n[Sub-problem 1]: q", TAGS)
    '[Meta-reasoning 1]: m\n[Sub-problem 1]: q'
    """
    head, sep, last = body.rpartition("\n")
    last = last.strip()
    if sep and last and any(h.startswith(last) for h in fmt.headers[1:]):
        return head.rstrip()
    return body


def _repair(backend: Backend, convs: Sequence[list[Message]], gens: list[Generation],
            rounds: int, fmt: SpanFormat, at_budget: bool = REPAIR_AT_BUDGET) -> list[Generation]:
    """``gens`` with incomplete completions continued through ``repair_prefix`` (in place);
    ``at_budget``: also those that ran to their budget."""
    stalled: set[int] = set()  # a continuation wrote nothing: its header was not cut
    for _ in range(rounds):
        todo: list[tuple[int, str]] = []
        for j, gen in enumerate(gens):
            cut = gen.hit_max_new_tokens and REPAIR_CUT_HEADER and j not in stalled
            prefix = None if gen.hit_max_new_tokens and not at_budget \
                else repair_prefix(gen.text, fmt, cut=cut)
            if prefix is not None:
                todo.append((j, prefix))
        if not todo:
            break
        more = backend.generate(
            [[*convs[j], {"role": "assistant", "content": prefix}] for j, prefix in todo],
            REPAIR_MAX_NEW_TOKENS, stop=fmt.stop)
        for (j, prefix), cont in zip(todo, more, strict=True):
            gens[j] = _merge(gens[j], cont, prefix + cont.text)
            if not cont.text.strip():
                stalled.add(j)
    return gens


def _merge(old: Generation, new: Generation, text: str) -> Generation:
    """``new`` with ``text`` and the token counts and loop flag of both generations."""
    return new.model_copy(update={
        "text": text,
        "prompt_tokens": old.prompt_tokens + new.prompt_tokens,
        "completion_tokens": old.completion_tokens + new.completion_tokens,
        "stopped_in_loop": old.stopped_in_loop or new.stopped_in_loop})


def _failure(gen: Generation, fmt: SpanFormat) -> str | None:
    """Why ``gen`` is described again: it has no step, or it ran to its budget before its
    step was complete; None when neither."""
    step = fmt.parse(gen.text)
    if step is None:
        return NO_STEP
    if gen.hit_max_new_tokens and not step.is_complete:
        return "stopped at the token budget"
    return None


def _began(text: str, chars: int = SHOWN_CHARS) -> str:
    """How a completion with no step began, for its warning: what the engine wrote instead
    of a step is the evidence an engine fault leaves (eval/README.md has one).

    >>> _began(""), _began("  Hello world"), _began("x" * 50, 4)
    ('it was empty', "it began 'Hello world'", "it began 'xxxx…'")
    """
    text = text.strip()
    if not text:
        return "it was empty"
    return f"it began {text[:chars] + ('…' if len(text) > chars else '')!r}"


def _retry(backend: Backend, convs: Sequence[list[Message]], gens: list[Generation],
           max_new_tokens: int, repair_rounds: int, fmt: SpanFormat,
           rounds: int = RETRY_ROUNDS, at_budget: bool = REPAIR_AT_BUDGET) -> dict[int, str]:
    """Describe again (in place), in a fresh batch, the spans whose completion failed
    (``_failure``); the retried indices and what their warning says (why, and how they were
    described again). A retry is kept when it did not fail, or when it has a step where the
    first had none. With ``RESET_AFTER_NO_STEP`` or more
    step-less completions the engine is restarted first (``Backend.reset``), and when it
    had state to drop, every completion from the fault on is described again
    (``_after_fault``)."""
    retried: dict[int, str] = {}
    for _ in range(rounds):
        todo = [(j, why) for j, gen in enumerate(gens)
                if j not in retried and (why := _failure(gen, fmt)) is not None]
        if not todo:
            break
        restart = sum(why == NO_STEP for _, why in todo) >= RESET_AFTER_NO_STEP \
            and backend.reset()
        if restart:  # the engine had state to drop: what it wrote since the fault is suspect
            todo = _after_fault(todo, len(gens), int(getattr(backend, "batch_size", 0)))
        sub = [convs[j] for j, _ in todo]
        again = _repair(backend, sub, backend.generate(sub, max_new_tokens, stop=fmt.stop),
                        repair_rounds, fmt, at_budget)
        for (j, why), new in zip(todo, again, strict=True):
            reason = why if why != NO_STEP else f"{why} ({_began(gens[j].text)})"
            retried[j] = f"{reason}; described again" + (f" {RESTART_NOTE}" if restart else "")
            if _failure(new, fmt) is None or (why == NO_STEP
                                               and fmt.parse(new.text) is not None):
                gens[j] = _merge(gens[j], new, new.text)
            else:  # keep the first text, count the work
                gens[j] = _merge(new, gens[j], gens[j].text)
    return retried


def _after_fault(todo: list[tuple[int, str]], n: int, in_flight: int,
                 ) -> list[tuple[int, str]]:
    """``todo`` with every other completion from ``in_flight`` places before its first
    step-less one to the end of the call (``AFTER_FAULT``), in order. Why: the OpenVINO
    pipeline's fault wrote garbage from one point of a call on, and only some of it had no
    step: other descriptions from then on parsed but had a part missing or belonged to
    another problem (eval/README.md, "engine fault"). Prompts are admitted in order, up to
    ``in_flight`` (the engine's batch) at a time, so the ones running when the first
    step-less completion began are in that margin.

    >>> [j for j, _ in _after_fault([(3, NO_STEP), (5, NO_STEP)], 7, 2)]
    [1, 2, 3, 4, 5, 6]
    """
    first = min(j for j, why in todo if why == NO_STEP)
    why = dict(todo)
    return [(j, why.get(j, AFTER_FAULT))
            for j in sorted(set(why) | set(range(max(0, first - in_flight), n)))]


def first_per_key(keys: Sequence[str]) -> list[int]:
    """Indices of the first occurrence of each distinct key, in order.

    >>> first_per_key(["a", "b", "a", "c", "b"])
    [0, 1, 3]
    """
    seen: dict[str, int] = {}
    for j, key in enumerate(keys):
        seen.setdefault(key, j)
    return list(seen.values())


def warm_prefixes(backend: Backend, convs: Sequence[list[Message]],
                  problems: Sequence[str]) -> None:
    """Prefill one span's prompt per distinct problem (a one-token generation, discarded), so
    the engine's prefix cache holds every problem's prompt prefix before the batch starts.

    Why: every span prompt of a problem repeats the same system prompt and problem (a GRPO
    group's completions all share one problem), and OpenVINO GenAI's prefix cache reuses
    only blocks that an earlier step has computed: prompts prefilled in the same step each
    compute the prefix again. The completions are the same text up to a backend's batch
    dependence: only what is in the cache changes (which is why identical span prompts are
    described once: with the warm-up but without that, copies of a step in one batch got
    different descriptions more often). On where ``Backend.prefix_warmup`` is (the OpenVINO
    backend's default); the README has the figures (``benchmarks/decompose.py
    [--no-prefix-warmup]``, ``gsrm-eval run [--no-prefix-warmup]``).
    """
    firsts = first_per_key([p.strip() for p in problems])
    if len(firsts) < len(convs):  # nothing shared: warming would only add work
        backend.generate([convs[j] for j in firsts], 1)


def add_prefix_warmup_arg(parser: Any) -> None:
    """``--prefix-warmup`` / ``--no-prefix-warmup`` (None when neither is given: the
    backend's default) on an argparse parser or group: ``gsrm``, ``gsrm-eval`` and the
    benchmarks (``gsrm-serve`` has it from its settings)."""
    parser.add_argument("--prefix-warmup", action=argparse.BooleanOptionalAction, default=None,
                        help="prefill each problem's prompt once before the describer's batch "
                             "(gsrm.describe.warm_prefixes; default: the backend's: on for "
                             "openvino, off for transformers)")


def span_prompts(fmt: SpanFormat, shots: Sequence[str] | int,
                 items: Sequence[tuple[str, str, Sequence[Span]]],
                 ) -> tuple[list[list[Message]], list[str], list[tuple[int, int, int]]]:
    """The describer's distinct span prompts for ``(problem, reasoning, spans)`` items, each
    one's problem, and ``(item, step, prompt index)`` for every span: identical prompts are
    listed once (``describe_many`` describes them once). Pure; ``benchmarks/decompose.py
    --breakdown`` times the engine on exactly these prompts."""
    convs: list[list[Message]] = []  # one per distinct span prompt
    problems: list[str] = []
    seen: dict[str, int] = {}
    where: list[tuple[int, int, int]] = []  # (item, step, index in convs)
    for i, (problem, reasoning, spans) in enumerate(items):
        for k, span in enumerate(spans):
            before = reasoning[spans[k - 1][0]:spans[k - 1][1]] if k and fmt.previous else None
            conv = fmt.messages(problem, span_text(reasoning, span), shots, before)
            key = json.dumps(conv)
            if key not in seen:
                seen[key] = len(convs)
                convs.append(conv)
                problems.append(problem)
            where.append((i, k, seen[key]))
    return convs, problems, where


def describe_many(backend: Backend, items: Sequence[tuple[str, str, Sequence[Span]]],
                  max_new_tokens: int | None = None,
                  repair_rounds: int = REPAIR_ROUNDS,
                  retry_rounds: int | None = None,
                  repair_at_budget: bool | None = None,
                  first_steps: Sequence[int] | None = None) -> list[Structure]:
    """Structures for ``(problem, reasoning, spans)`` items: one generation per distinct span
    prompt, batched (then the format repair's continuations and the retry of spans with no
    step or cut at the budget, batched). ``max_new_tokens`` None: the backend's span format's
    budget (``SpanFormat.max_new_tokens``); ``retry_rounds`` None: ``RETRY_ROUNDS``;
    ``repair_at_budget`` None: ``REPAIR_AT_BUDGET``; ``first_steps``: each item's first span's
    index in its whole trace (default 0), for the step numbers of warnings when only some of a
    trace's spans are described (``gsrm.readonly``).

    Spans with the same prompt (same problem, same span text: the steps a corrected or
    perturbed trace shares with its original, completions of a GRPO group that agree on a
    step) are described once and share the description, so identical steps always get
    identical descriptions, whatever an engine's batch numerics (OpenVINO's int8 kernels
    give a prompt another text in another batch slot), and the work is done once. A
    structure's token counts are what was decoded for it in this call (a shared span counts
    for its first trace)."""
    fmt = get_span_format(backend.span_format)
    max_new_tokens = fmt.budget(max_new_tokens)
    convs, problems, where = span_prompts(fmt, backend.shots, items)
    if backend.prefix_warmup:
        warm_prefixes(backend, convs, problems)
    gens: list[Generation] = backend.generate(convs, max_new_tokens, stop=fmt.stop) \
        if convs else []
    at_budget = REPAIR_AT_BUDGET if repair_at_budget is None else repair_at_budget
    # first completions the budget left without a complete step (``_failure``'s test)
    cut = {j for j, gen in enumerate(gens)
           if gen.hit_max_new_tokens and _failure(gen, fmt) is not None}
    gens = _repair(backend, convs, gens, repair_rounds, fmt, at_budget)
    retried = _retry(backend, convs, gens, max_new_tokens, repair_rounds, fmt,
                     RETRY_ROUNDS if retry_rounds is None else retry_rounds, at_budget)
    out = [Structure(steps=[Step(span=s) for s in spans]) for _, _, spans in items]
    stats = [{"prompt": 0, "completion": 0, "budget": 0, "loop": 0} for _ in items]
    counted: set[int] = set()
    for i, k, j in where:
        gen = gens[j]
        step, warns = first_step(gen.text, fmt)
        out[i].steps[k] = step.model_copy(update={"span": items[i][2][k]})
        if j in retried:
            warns = [f"the describer's first completion {retried[j]}", *warns]
        elif j in cut:
            warns = [(f"{AT_BUDGET_WARNING} ({max_new_tokens}) before its step was complete; "
                      "its missing parts were asked for after the cut"), *warns]
        first = first_steps[i] if first_steps is not None else 0
        out[i].warnings.extend(f"step {first + k + 1}: {w}" for w in warns)
        if j not in counted:  # tokens count where the work was done: the first such span
            counted.add(j)
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
            s.warnings.append(f"{st['budget']} {BUDGET_WARNING}")
    return out


def decompose_two_stage(segmenter: Segmenter, backend: Backend,
                        items: Sequence[tuple[str, str]],
                        max_new_tokens: int | None = None) -> list[Structure]:
    """Segment every trace, then describe every span of every trace in one batch (budget:
    ``describe_many``'s)."""
    spans = segmenter.segment_many([r for _, r in items])
    return describe_many(backend, [(p, r, s) for (p, r), s in zip(items, spans, strict=True)],
                         max_new_tokens)
