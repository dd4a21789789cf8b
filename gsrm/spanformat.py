r"""How a step span is put to the describer and how its one-step reply is written, by name.

Why a registry: the describer (stage 2, ``gsrm.describe``) is a small model trained on one
format; the format is part of what it learnt, so an adapter declares the one it was trained
on (``span_format`` in its ``run.json``, written by ``gsrm-train sft`` from the data's
manifest) and the prompt, the stop strings, the parser and the format repair all follow it.
The structure that comes out is the same canonical ``Step`` either way.

- ``tags``: the canonical decomposition prompt (``gsrm.prompts.build_messages``, with the
  backend's few-shot examples when it has no adapter) and a one-step reply in the canonical
  ``[Meta-reasoning 1]: / [Sub-problem 1]: / [Answer 1]:`` tags. What every adapter trained
  before the compact format used, and the base model's format.
- ``pqa``: a short system prompt for one step, and a reply in three lines headed ``Plan:``,
  ``Question:``, ``Answer:``. Why: the tags are ~21 of the ~50 tokens a span's reply decodes
  and the canonical system prompt is ~130 of a span prompt's ~250 tokens; both are paid once
  per span and the describer is decode- and prefill-bound on a CPU. A describer trained on
  it (same data and recipe) was 1.3x faster on GSM8K but left more steps incomplete on long
  math traces until its long-trace wording was reworded by a trained describer
  (``training.relabel``; ``describer-pqa-brief``, README, "Speed and memory").
- ``qa``: ``pqa`` without the plan line: a reply in two lines, ``Question:`` and ``Answer:``;
  the step's meta-reasoning is derived from its question in code (``gsrm.plans.plan_for``,
  one fixed verb). Why: the describers' data derives every plan from the question
  (``training.descdata.describe_meta``, a random verb), so a pqa describer spends ~45% of
  what it decodes on a reworded question (README, "What the plan line carries"); deriving it
  decodes only what carries information, and the reward's meta gate ("are both devoted to
  the same sub-problem", DESIGN.md) compares plans that differ only where the questions do.
- ``tags-prev``: ``tags`` with the end of the previous span's text (at most
  ``PREVIOUS_CHARS`` characters, ``previous_tail``) in the user turn, between the problem and
  the span. Why: a span that only makes sense after the one before it ("So that's 6 more.")
  gets a vague sub-problem from ``tags``; issue 16 asks for the steps so far in the prompt.
  The previous *span's text*, not its description, keeps every span of a trace independent,
  so all of them still decode as one batch (the descriptions would make a trace's spans wait
  for each other, in series).

Example::

    >>> fmt = get_span_format("pqa")
    >>> fmt.render("Find the clips.", "How many clips?", "24")
    'Plan: Find the clips.\nQuestion: How many clips?\nAnswer: 24'
    >>> fmt.parse("Plan: m\nQuestion: q?\nAnswer: 5")
    Step(meta='m', subproblem='q?', answer='5', span=None)
    >>> get_span_format("qa").parse("Question: How old is Mark?\nAnswer: 12")
    Step(meta='Find how old Mark is.', subproblem='How old is Mark?', answer='12', span=None)
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from gsrm.parse import parse_structure, part_spans
from gsrm.plans import plan_for
from gsrm.prompts import Message, build_messages
from gsrm.structure import Kind, Step

PQA_SYSTEM_PROMPT = """Describe one step of a reasoning trace in three lines:
Plan: why this sub-problem is the one to solve next. Do not state its answer here.
Question: the single question this step answers.
Answer: the brief answer to that question, without reasoning."""
"""The ``pqa`` describer's system prompt: the canonical one's rules for one step."""

QA_SYSTEM_PROMPT = """Describe one step of a reasoning trace in two lines:
Question: the single question this step answers.
Answer: the brief answer to that question, without reasoning."""
"""The ``qa`` describer's system prompt: ``PQA_SYSTEM_PROMPT`` without the plan line."""

PARTS: tuple[Kind, ...] = ("meta", "subproblem", "answer")
"""The parts a three-line format's lines hold, in order."""

PQA_USER_TEMPLATE = "Problem:\n{problem}\n\nStep:\n{span}"

PREVIOUS_HEADING = "Previous step (its end):"
"""Heading of the previous span's text in a ``previous`` format's user turn."""
PREVIOUS_CHARS = 240
"""At most this many characters of the previous span (its end: where its result is stated)."""


def previous_tail(text: str, limit: int = PREVIOUS_CHARS) -> str:
    """The end of the previous span, at most ``limit`` characters, cut at a word boundary
    (marked "…"); why its end: a step's result is stated last ("So she has 9 eggs.").

    >>> previous_tail("one two three four", 10)
    '… three four'
    >>> previous_tail("  short  ")
    'short'
    """
    text = " ".join(text.split())
    if len(text) <= limit:
        return text
    start = len(text) - limit
    cut = text[start:]
    space = cut.find(" ")
    if text[start - 1] != " " and 0 <= space < len(cut) - 1:  # drop a cut word's end
        cut = cut[space + 1:]
    return f"… {cut}"


@dataclass(frozen=True)
class SpanFormat:
    """One describer format: its prompt, its three line headers and where a reply ends.

    ``headers`` are written in front of the meta-reasoning, sub-problem and answer lines;
    ``marks`` are what shows a part was started (a tag may be written with another number);
    ``stop`` ends a reply at a second step (the describer writes one). ``canonical``: the
    canonical decomposition prompt (``gsrm.prompts.build_messages``) and step grammar
    (``gsrm.parse``: every tag spelling and number); otherwise ``system`` and the
    ``PQA_USER_TEMPLATE`` user turn, and lines read by their exact ``headers``.
    ``previous``: the end of the previous span is shown before the span (``previous_tail``).
    ``parts``: which part each header's line holds; a format without ``meta`` derives the
    meta-reasoning from the sub-problem (``gsrm.plans.plan_for``) when it parses a reply.
    ``max_new_tokens``: the describer's budget per span in this format (what a completion is
    cut at; ``gsrm.model.GSRM.describe_max_new_tokens`` unless given).
    """

    name: str
    headers: tuple[str, ...]
    marks: tuple[str, ...]
    stop: tuple[str, ...]
    canonical: bool = False
    system: str = ""
    previous: bool = False
    parts: tuple[Kind, ...] = PARTS
    max_new_tokens: int = 192

    def __post_init__(self) -> None:
        if not len(self.headers) == len(self.marks) == len(self.parts):
            raise ValueError(f"span format {self.name!r}: headers, marks and parts differ "
                             "in length")
        if "subproblem" not in self.parts or "answer" not in self.parts:
            raise ValueError(f"span format {self.name!r}: needs a subproblem and an answer line")

    def budget(self, given: int | None = None) -> int:
        """The describer's token budget per span: ``given`` when set (a positive number),
        else this format's ``max_new_tokens``. One rule for ``gsrm.describe.describe_many``,
        ``gsrm.model.GSRM.describe_max_new_tokens`` and ``benchmarks/describer_dev.py``, so
        each describer gets the budget it was checked with unless one is asked for.

        >>> get_span_format("qa").budget(), get_span_format("qa").budget(192)
        (128, 192)
        >>> get_span_format("tags").budget(None), get_span_format("tags").budget(0)
        (192, 192)
        """
        return given or self.max_new_tokens

    @property
    def derives_meta(self) -> bool:
        """Whether the meta-reasoning is derived from the sub-problem, not written."""
        return "meta" not in self.parts

    def messages(self, problem: str, span: str, shots: Sequence[str] | int = (),
                 previous: str | None = None) -> list[Message]:
        """The chat that asks for ``span``'s step (``shots`` only for the canonical prompt).
        ``previous``: the text of the span before it (None or empty for a trace's first
        span); read only by a ``previous`` format, which shows its end."""
        if self.previous and previous and previous.strip():  # shown after the problem
            problem = f"{problem.strip()}\n\n{PREVIOUS_HEADING}\n{previous_tail(previous)}"
        if self.canonical:
            return build_messages(problem, span, shots)
        return [{"role": "system", "content": self.system},
                {"role": "user", "content": PQA_USER_TEMPLATE.format(
                    problem=problem.strip(), span=span.strip())}]

    def render(self, meta: str, subproblem: str, answer: str) -> str:
        """The reply the describer is trained to write for one step (a part this format
        does not write, the derived meta-reasoning, is left out)."""
        text = {"meta": meta, "subproblem": subproblem, "answer": answer}
        return "\n".join(f"{h} {text[p].strip()}" for h, p in
                          zip(self.headers, self.parts, strict=True))

    def parse(self, text: str) -> Step | None:
        """The first step of a reply (parts cut at a following header), or None when no part
        of it could be found."""
        if self.canonical:
            parsed = parse_structure(text)
            if not parsed.steps:
                return None
            step = parsed.steps[0]
            # a reply cut by the budget can end in the next step's partial tag ("\n[Meta")
            return step.model_copy(update={k: step.part(k).split("\n[")[0].strip()
                                           for k in ("meta", "subproblem", "answer")})
        found = _split_lines(text, self.headers)
        if found is None:
            return None
        got: dict[str, str] = dict(zip(self.parts, found, strict=True))
        if self.derives_meta:
            sub = got["subproblem"]
            got["meta"] = plan_for(sub) if sub else ""
        return Step(meta=got["meta"], subproblem=got["subproblem"], answer=got["answer"])

    def wording_spans(self, target: str) -> list[tuple[int, int]]:
        """Character spans of the meta-reasoning and sub-problem texts of a rendered target
        (after the header; what SFT masks for rows whose wording is not human). The canonical
        format reads every step of a whole decomposition (``gsrm.parse.part_spans``)."""
        return self._part_spans(target, answer=False)

    def answer_spans(self, target: str) -> list[tuple[int, int]]:
        """Character spans of the answer texts of a rendered target (after the header; what
        SFT masks in a row whose answer copies its span, ``training.sft``).

        >>> t = get_span_format("pqa").render("Plan it.", "How many?", "72 eggs")
        >>> [t[a:b] for a, b in get_span_format("pqa").answer_spans(t)]
        [' 72 eggs']
        >>> t = get_span_format("tags").render("Plan it.", "How many?", "72 eggs")
        >>> [t[a:b] for a, b in get_span_format("tags").answer_spans(t)]
        [' 72 eggs']
        """
        return self._part_spans(target, answer=True)

    def _part_spans(self, target: str, answer: bool) -> list[tuple[int, int]]:
        """The wording's spans, or (``answer``) the answer's: the canonical grammar's for every
        step, else the first line after each of this format's headers (of those parts)."""
        if self.canonical:
            return part_spans(target, answer)
        out = []
        for head in (h for h, p in zip(self.headers, self.parts, strict=True)
                     if (p == "answer") == answer):
            m = re.search(rf"^{re.escape(head)}([ \t]*.*)$", target, re.MULTILINE)
            if m and m.end(1) > m.start(1):
                out.append((m.start(1), m.end(1)))
        return sorted(out)


def _split_lines(text: str, headers: tuple[str, ...]) -> list[str] | None:
    """Parts after each header's first line-start occurrence, in order, each up to the next
    header line; None when the first header is missing."""
    starts = []
    pos = 0
    for head in headers:
        m = re.compile(rf"(?:^|\n)[ \t]*{re.escape(head)}").search(text, pos)
        if m is None:
            break
        starts.append((m.start(), m.end()))
        pos = m.end()
    if not starts:
        return None
    parts = []
    for k, (_, end) in enumerate(starts):
        stop = starts[k + 1][0] if k + 1 < len(starts) else len(text)
        body = text[end:stop]
        nxt = re.search(r"\n[ \t]*(?:" + "|".join(re.escape(h) for h in headers) + ")", body)
        parts.append((body[:nxt.start()] if nxt else body).strip())
    return parts + [""] * (len(headers) - len(parts))


SPAN_FORMATS: dict[str, SpanFormat] = {
    "tags": SpanFormat(
        name="tags", headers=("[Meta-reasoning 1]:", "[Sub-problem 1]:", "[Answer 1]:"),
        marks=("[Meta-reasoning", "[Sub-problem", "[Answer"),
        stop=("\n[Meta-reasoning", "\nSo the final answer"), canonical=True),
    "tags-prev": SpanFormat(
        name="tags-prev", headers=("[Meta-reasoning 1]:", "[Sub-problem 1]:", "[Answer 1]:"),
        marks=("[Meta-reasoning", "[Sub-problem", "[Answer"),
        stop=("\n[Meta-reasoning", "\nSo the final answer"), canonical=True, previous=True),
    "pqa": SpanFormat(
        name="pqa", headers=("Plan:", "Question:", "Answer:"),
        marks=("Plan:", "Question:", "Answer:"), stop=("\nPlan:",),
        system=PQA_SYSTEM_PROMPT),
    "qa": SpanFormat(
        name="qa", headers=("Question:", "Answer:"), marks=("Question:", "Answer:"),
        stop=("\nQuestion:",), system=QA_SYSTEM_PROMPT, parts=("subproblem", "answer"),
        # no plan restating a long formula before the question: 128 cut no dev description
        # that 192 kept whole (README, "The question-and-answer describer")
        max_new_tokens=128),
}


def get_span_format(name: str) -> SpanFormat:
    """The registered format ``name`` (a clear error naming the known ones otherwise)."""
    try:
        return SPAN_FORMATS[name]
    except KeyError:
        raise KeyError(f"unknown span format {name!r}; known: {sorted(SPAN_FORMATS)}") from None


AUTO = "auto"
"""The ``--span-format`` value that means the shipped default adapter's format
(``default_span_format``)."""
SPAN_FORMAT_CHOICES = (AUTO, *sorted(SPAN_FORMATS))
"""Every value ``--span-format`` / ``GSRM_SPAN_FORMAT`` takes (``resolve_span_format``)."""


def default_span_format() -> str:
    """The span format of the shipped default describer (``gsrm.weights.DEFAULT_ADAPTER``), or
    ``tags`` on an install without it. Why: a describer served elsewhere (``--backend
    openai``) is most often the default one merged, so its format is the sensible default;
    it follows the default adapter instead of being written down a second time."""
    from gsrm.weights import default_adapter_dir

    return span_format_of(default_adapter_dir())


def resolve_span_format(name: str | None) -> str:
    """``name`` checked against the registry; ``None`` or ``"auto"``: ``default_span_format()``.

    >>> resolve_span_format("tags")
    'tags'
    """
    if name is None or name == AUTO:
        return default_span_format()
    get_span_format(name)
    return name


def span_format_of(adapter: str | Path | None) -> str:
    """The span format an adapter folder was trained on (``run.json``'s ``span_format``;
    ``tags`` for the base model and for adapters trained before the key existed)."""
    if adapter is None:
        return "tags"
    run = Path(adapter) / "run.json"
    if not run.is_file():
        return "tags"
    try:
        name = json.loads(run.read_text()).get("span_format") or "tags"
    except (OSError, ValueError) as exc:
        raise ValueError(f"{run}: not readable as JSON ({exc})") from exc
    get_span_format(name)
    return str(name)


__all__ = ["AUTO", "PARTS", "PQA_SYSTEM_PROMPT", "PREVIOUS_CHARS", "PREVIOUS_HEADING",
           "QA_SYSTEM_PROMPT", "SPAN_FORMATS", "SPAN_FORMAT_CHOICES", "SpanFormat",
           "default_span_format", "get_span_format", "previous_tail", "resolve_span_format",
           "span_format_of"]
