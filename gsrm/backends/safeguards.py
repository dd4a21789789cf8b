r"""The generic safeguards on generated text, the same in every backend.

Why only these: the token budget (``max_new_tokens``) bounds the cost of any generation,
and a step that repeats an earlier step word for word (``gsrm.parse.repeated_step_start``)
or a chunk written three times in a row inside a line (``line_loop_end``) marks a greedy
loop without judging content. Rules that look at the trace (where it ends,
which sentence an answer rewrites) or at paraphrases are fitted to one data set's outputs and
cut honest steps elsewhere; they are not used. Each backend passes its raw completion through
``apply_safeguards``, and a decoder that can stop early asks ``should_stop`` on the text so
far, which gives the same text as cutting a longer completion afterwards, so a model's reward
does not depend on the backend that served it. The rule's name (``REPEAT_RULE``) is in every
backend's cache identity.

Example::

    >>> step = "[Meta-reasoning {0}]: m\n[Sub-problem {0}]: q?\n[Answer {0}]: 5\n"
    >>> apply_safeguards(step.format(1) + step.format(2) + "[Meta-reasoning 3]:\n", None, True)
    ('[Meta-reasoning 1]: m\n[Sub-problem 1]: q?\n[Answer 1]: 5', False, True)
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from gsrm.parse import repeated_step_start

REPEAT_RULE = "exact-step-repeat+line-loop-8-100x3"
"""Names the repeat rules in cache identities; change it when a rule changes."""

LOOP_MIN_CHARS, LOOP_MAX_CHARS, LOOP_COPIES = 8, 100, 3
LOOP_TAIL_CHARS = LOOP_COPIES * LOOP_MAX_CHARS + 64
"""What ``should_stop`` searches: the copies of the longest chunk plus one token's text."""
# a chunk of 8-100 characters (no line break) and two more copies of it right after
_LOOP = re.compile(rf"(?=([^\n]{{{LOOP_MIN_CHARS},{LOOP_MAX_CHARS}}}?)\1{{{LOOP_COPIES - 1}}})")


def line_loop_end(text: str) -> int | None:
    r"""Where text stuck in a loop inside a line should end: after the first copy of the
    chunk (8-100 characters) whose third consecutive copy is complete earliest; None when
    there is none.

    Why: a greedy decoder can loop inside one line ("the probability of the probability of
    ...", "} } } } ...") until the token budget; that is no step to repeat, so the step rule
    misses it. Three copies of a chunk that long in a row is not wording a description or a
    decomposition needs. The earliest *completed* loop is chosen so that stopping a running
    generation the moment one appears (``should_stop``) and cutting a longer completion
    afterwards keep the same text.

    >>> t = "[Answer 1]: the value of $c$ and $c$ and $c$ and $c$ and $"
    >>> t[:line_loop_end(t)]
    '[Answer 1]: the value of $c$ and'
    >>> line_loop_end("0.33333333, (1, 1, 1, 1), 10, 20, 30, 40") is None
    True
    """
    best: tuple[int, int] | None = None  # (end of the last copy, end of the first)
    for m in _LOOP.finditer(text):
        n = len(m.group(1))
        end = m.start() + LOOP_COPIES * n
        if best is None or end < best[0]:
            best = (end, m.start() + n)
        if m.start() >= best[0]:
            break
    return None if best is None else best[1]


def cut_at_stop(text: str, stop: Sequence[str] | None) -> tuple[str, bool]:
    r"""``text`` cut before the first stop string, and whether one occurred.

    >>> cut_at_stop("a\n[Meta-reasoning 2]: b", ["\n[Meta-reasoning 2]"])
    ('a', True)
    """
    at = min((i for i in (text.find(s) for s in stop or () if s) if i >= 0), default=-1)
    return (text[:at], True) if at >= 0 else (text, False)


def apply_safeguards(text: str, stop: Sequence[str] | None,
                     stop_repeats: bool) -> tuple[str, bool, bool]:
    """The completion as kept, whether a stop string cut it, and whether a loop did (a
    repeated step or a loop inside a line).

    Stop strings cut first; then, with ``stop_repeats``, the first step that repeats an
    earlier one is dropped with everything after it, and a loop inside a line is cut after
    its first copy (``line_loop_end``; trailing whitespace removed).
    """
    text, stopped = cut_at_stop(text, stop)
    if stop_repeats:
        at = repeated_step_start(text)
        if at is not None:
            text, stopped_in_loop = text[:at].rstrip(), True
        else:
            stopped_in_loop = False
        loop = line_loop_end(text)
        if loop is not None:
            return text[:loop].rstrip(), stopped, True
        return text, stopped, stopped_in_loop
    return text, stopped, False


def should_stop(text: str, stop: Sequence[str] | None, stop_repeats: bool) -> bool:
    """Whether a running generation can end now: a stop string, a repeated step or a loop
    inside a line occurred. Asked after every new token (the loop search relies on that).

    Ending there keeps exactly what ``apply_safeguards`` keeps of any longer completion.
    """
    if cut_at_stop(text, stop)[1]:
        return True
    # a decoder asks after every token, so a loop that was not there one token ago ends in
    # the last few characters: only the tail is searched (a 4k-character text costs ~10 ms)
    return stop_repeats and (repeated_step_start(text) is not None
                             or line_loop_end(text[-LOOP_TAIL_CHARS:]) is not None)
