r"""The generic safeguards on generated text, the same in every backend.

Why only these two: the token budget (``max_new_tokens``) bounds the cost of any generation,
and a step that repeats an earlier step word for word (``gsrm.parse.repeated_step_start``)
marks a greedy loop without judging content. Rules that look at the trace (where it ends,
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

from collections.abc import Sequence

from gsrm.parse import repeated_step_start

REPEAT_RULE = "exact-step-repeat"
"""Names the repeat rule in cache identities; change it when the rule changes."""


def cut_at_stop(text: str, stop: Sequence[str] | None) -> tuple[str, bool]:
    r"""``text`` cut before the first stop string, and whether one occurred.

    >>> cut_at_stop("a\n[Meta-reasoning 2]: b", ["\n[Meta-reasoning 2]"])
    ('a', True)
    """
    at = min((i for i in (text.find(s) for s in stop or () if s) if i >= 0), default=-1)
    return (text[:at], True) if at >= 0 else (text, False)


def apply_safeguards(text: str, stop: Sequence[str] | None,
                     stop_repeats: bool) -> tuple[str, bool, bool]:
    """The completion as kept, whether a stop string cut it, and whether a repeated step did.

    Stop strings cut first; then, with ``stop_repeats``, the first step that repeats an
    earlier one is dropped with everything after it (trailing whitespace removed).
    """
    text, stopped = cut_at_stop(text, stop)
    if stop_repeats:
        at = repeated_step_start(text)
        if at is not None:
            return text[:at].rstrip(), stopped, True
    return text, stopped, False


def should_stop(text: str, stop: Sequence[str] | None, stop_repeats: bool) -> bool:
    """Whether a running generation can end now: a stop string or a repeated step occurred.

    Ending there keeps exactly what ``apply_safeguards`` keeps of any longer completion.
    """
    if cut_at_stop(text, stop)[1]:
        return True
    return stop_repeats and repeated_step_start(text) is not None
