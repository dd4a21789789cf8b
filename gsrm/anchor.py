"""Anchoring a decomposition to its trace: find the step whose answer jumped over a sentence.

Why: the small fine-tuned GSRM rewrites a short trace sentence by sentence (one GSM8K solution
sentence, one step), but greedily it sometimes jumps: its sub-problem for step i already asks
the question of the sentence after next, and answer i copies that sentence, so a step of the
trace is silently lost (held-out GSM8K, 2026-11-30 adapter: the commonest cause of too few
steps, by a hand analysis of 150 decompositions). A step lost this way shortens the student's
and the teacher's decompositions alike and misaligns every later step of the reward.

The rule, deliberately narrow so that it cannot fire on long traces whose brief answers
summarize several sentences each: while every complete answer so far *rewrites one trace
sentence* (``rewrites``) and the rewritten sentences move forward, an answer that lands more
than one sentence past the last one, over sentences that no answer covers, has skipped them;
one that lands on the last one or before it, with the next one uncovered, went back. The
decoder (``gsrm.backends.TransformersBackend``) then cuts that answer back to its
``[Answer i]:`` header and makes it start with the opening words of the first uncovered
sentence (``anchor_opening``); the model writes the rest itself.

Pure functions over text; no model.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import pairwise

ANCHOR_MIN_F1 = 0.6  # an answer rewrites a sentence: content-token F1 at least this
COVER_RECALL = 0.6  # a sentence is covered by an answer holding this share of its tokens
REWRITE_PRECISION = 0.8  # ... or the answer's tokens are nearly all the sentence's
REWRITE_RECALL = 0.35  # ... and cover this share of it
OPENING_WORDS = 3  # words of the skipped sentence that start the re-anchored answer
MAX_ANCHORS = 3  # re-anchored answers per decomposition

_ANSWER_LINE = re.compile(r"^\[Answer (\d+)\]:[ \t]*(.*)\n", re.MULTILINE)


@dataclass(frozen=True)
class Skip:
    """Answer ``step`` skipped trace sentence ``sentence`` (and maybe more after it)."""

    step: int
    body_start: int  # offset of the answer's text, right after "[Answer i]: "
    sentence: int  # index of the first skipped sentence in ``trace_sentences``
    opening: str  # the words the re-anchored answer starts with


@functools.lru_cache(maxsize=1024)
def trace_sentences(reasoning: str) -> tuple[str, ...]:
    """The trace's sentences (``gsrm.backends.split_sentences``), each also cut at its run-on
    joins (``gsrm.backends.run_on_cuts``: a capitalised word after an uncapitalised one, where
    a full stop or line break went missing); memoized per trace.

    >>> trace_sentences("It takes 2/2=1 bolt So the total is 2+1=3 bolts. Done.")
    ('It takes 2/2=1 bolt', 'So the total is 2+1=3 bolts.', 'Done.')
    """
    from gsrm.text import run_on_cuts, split_sentences

    out: list[str] = []
    for sentence in split_sentences(reasoning):
        cuts = [0, *run_on_cuts(sentence), len(sentence)]
        out.extend(p for a, b in pairwise(cuts) if (p := sentence[a:b].strip()))
    return tuple(out)


@functools.lru_cache(maxsize=4096)
def _tokens(text: str) -> tuple[str, ...]:
    from gsrm.judges import content_tokens

    return tuple(content_tokens(text))


def _recall(sentence: str, answer: str) -> float:
    """Share of the sentence's content tokens found in the answer (with multiplicity)."""
    from gsrm.judges import token_overlap

    need = _tokens(sentence)
    return token_overlap(need, _tokens(answer)) / len(need) if need else 0.0


def anchor_opening(sentence: str, words: int = OPENING_WORDS) -> str:
    """The first ``words`` words of a sentence: enough to point the model at it.

    >>> anchor_opening("The rounds and appointments will take 180 + 300 = 480 minutes total.")
    'The rounds and'
    """
    return " ".join(sentence.split()[:words])


def rewrites(answer: str, sentence: str, min_f1: float = ANCHOR_MIN_F1) -> bool:
    """The answer rewrites the sentence: content-token F1 >= ``min_f1``, or nearly all of the
    answer's tokens (``REWRITE_PRECISION``) are the sentence's and cover ``REWRITE_RECALL`` of
    it (an answer keeps the result and drops a long calculation: "Together, they sold 8B = 64
    bars." for "... sold 3 1/2 * B + 4 1/2 * B = 8B = 64 bars.").

    >>> rewrites("Together, they sold 8B = 64 bars.",
    ...          "Together, they sold 3 1/2 * B + 4 1/2 * B = 8B = 64 bars.")
    True
    >>> rewrites("8 hours", "An hour is 60 minutes, so they take 480 / 60 = 8 hours.")
    False
    """
    if _f1(answer, sentence) >= min_f1:
        return True
    a = _tokens(answer)
    return (len(a) >= 3 and _recall(answer, sentence) >= REWRITE_PRECISION
            and _recall(sentence, answer) >= REWRITE_RECALL)


def find_skip(text: str, reasoning: str, min_f1: float = ANCHOR_MIN_F1) -> Skip | None:
    r"""The first complete answer that lost its place in the trace, or None.

    Only complete answer lines (ended by a newline) count. Scanning them in order, each must
    rewrite one trace sentence (``rewrites``; the best by F1); the first that does not ends
    the scan with None (the decomposition is not rewriting the trace sentence by sentence, so
    nothing is claimed). An answer has lost its place when
    * it rewrites a sentence more than one past the last rewritten one, and none of the
      sentences in between is covered by this or an earlier answer (``COVER_RECALL`` of its
      tokens in it: a merged answer covers two, and "Mr." split off as a sentence is covered
      by "Mr. Roger bought ..."): it skipped them; or
    * it rewrites the last rewritten sentence or one before it again while the next one is
      uncovered: it went back (greedily, the step after it repeats an earlier step).
    The re-anchored answer starts at the first uncovered sentence after the last one.

    >>> trace = ("He has 9 patients, so rounds take 9 * 20 = 180 minutes. Ten visits take "
    ...          "10 * 30 = 300 minutes. Together they take 180 + 300 = 480 minutes. "
    ...          "That is 480 / 60 = 8 hours.")
    >>> t = ("[Meta-reasoning 1]: m\n[Sub-problem 1]: Rounds?\n[Answer 1]: He has 9 patients, "
    ...      "so rounds take 180 minutes.\n[Meta-reasoning 2]: m\n[Sub-problem 2]: Visits?\n"
    ...      "[Answer 2]: Ten visits take 300 minutes.\n[Meta-reasoning 3]: m\n"
    ...      "[Sub-problem 3]: Hours?\n[Answer 3]: That is 8 hours.\n")
    >>> s = find_skip(t, trace)
    >>> (s.step, s.sentence, s.opening, t[s.body_start:s.body_start + 7])
    (3, 2, 'Together they take', 'That is')
    >>> find_skip(t.replace("That is 8 hours.", "Together they take 480 minutes."), trace) is None
    True
    >>> find_skip(t.replace("That is 8 hours.", "Ten visits take 300 minutes."), trace).sentence
    2
    """
    sentences = trace_sentences(reasoning)
    if len(sentences) < 2:
        return None
    frontier = -1
    answers: list[str] = []
    for m, body, best in _walk(text, sentences, min_f1):
        nxt = frontier + 1
        if best > nxt:
            gap = range(nxt, best)
            lost = not any(_recall(sentences[j], a) >= COVER_RECALL
                           for j in gap for a in [*answers, body])
        else:
            lost = best < nxt and nxt < len(sentences) and not any(
                _recall(sentences[nxt], a) >= COVER_RECALL for a in [*answers, body])
        if lost:
            return Skip(step=int(m.group(1)), body_start=m.start(2), sentence=nxt,
                        opening=anchor_opening(sentences[nxt]))
        if best <= frontier:
            return None
        frontier = best
        answers.append(body)
    return None


def rewriting_steps(text: str, reasoning: str, min_f1: float = ANCHOR_MIN_F1) -> int:
    r"""How many leading complete answers each rewrite a trace sentence past the previous one.

    Why: a terse model may word several steps' sub-problems alike ("How many chocolate bars
    are in a box?" four times) while its answers walk through the trace sentence by sentence;
    that is an honest decomposition with poor questions, not a stuck loop, and the in-a-row
    stop (``gsrm.backends.repeated_step_start``) lets it go on.

    >>> trace = "Lisa sold 3 * B bars. Peter sold 4 * B bars. Together 7B = 63 bars. So B = 9."
    >>> t = ("[Answer 1]: Lisa sold 3 * B bars.\n[Answer 2]: Peter sold 4 * B bars.\n"
    ...      "[Answer 3]: Lisa sold 3 * B bars.\n")
    >>> rewriting_steps(t, trace)
    2
    """
    sentences = trace_sentences(reasoning)
    if len(sentences) < 2:
        return 0
    n, frontier = 0, -1
    for _, _, best in _walk(text, sentences, min_f1):
        if best <= frontier:
            break
        n, frontier = n + 1, best
    return n


def _walk(text: str, sentences: tuple[str, ...], min_f1: float
          ) -> Iterator[tuple[re.Match[str], str, int]]:
    """(answer line match, its text, its sentence) for the leading complete answers that each
    rewrite some trace sentence (``rewrites``; the best by F1)."""
    for m in _ANSWER_LINE.finditer(text):
        body = m.group(2).strip()
        if not body:
            return
        scores = [_f1(body, s) for s in sentences]
        order = sorted(range(len(sentences)), key=lambda k: (-scores[k], k))
        best = next((k for k in order[:3] if rewrites(body, sentences[k], min_f1)), None)
        if best is None:
            return
        yield m, body, best


def _f1(a: str, b: str) -> float:
    from gsrm.judges import token_f1

    return token_f1(a, b)
