"""Reward components for RLKD's GRPO, chosen by name, each a TRL reward function.

Why a registry of separate functions (open-r1's ``get_reward_funcs``): TRL logs the mean and std
of every reward function per step (``rewards/<name>/mean``) and sums them with
``GRPOConfig.reward_weights``, so keeping the components apart gives per-component learning
curves and lets the weights be set on the command line. The paper's weights are the defaults:
accuracy 15, format 10, tag count 10, GSRM 15 (DESIGN.md section 1).

Components (every one has TRL's signature ``f(prompts, completions, **kwargs) -> list``):

- ``accuracy``: 1.0 if the final answer (text after ``</think>``, else the whole completion)
  equals the dataset's ``answer`` column under ``math-verify``; GSM8K solutions are accepted
  as given (the number after ``####`` is used). An unparsable gold answer gives ``None``.
- ``format``: 1.0 for ``<think>`` reasoning ``</think>`` followed by a non-empty answer.
- ``tag_count``: 0.25 each for exactly one ``<think>``, exactly one ``</think>``, the
  completion starting with ``<think>`` and ``</think>`` being followed by text (partial credit
  that shapes the format early in training).
- ``gsrm``: the structural reward of the student's reasoning against the teacher's
  (``teacher_reasoning`` column), via the reward endpoint or an in-process ``gsrm.model.GSRM``.

Example::

    >>> funcs = get_reward_funcs(["format", "tag_count"])
    >>> [f.__name__ for f in funcs]
    ['format', 'tag_count']
    >>> funcs[0](prompts=["q"], completions=["<think>2+3=5</think> 5"])
    [1.0]
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

RewardFunc = Callable[..., list[float | None]]

DEFAULT_WEIGHTS: dict[str, float] = {"accuracy": 15.0, "format": 10.0, "tag_count": 10.0,
                                     "gsrm": 15.0}
DEFAULT_REWARDS: tuple[str, ...] = ("accuracy", "format", "tag_count", "gsrm")


# --------------------------------------------------------------------------- text helpers
def completion_text(completion: Any) -> str:
    """The text of one completion: a string, or the last message's content (conversational).

    >>> completion_text([{"role": "assistant", "content": "5"}]), completion_text("5")
    ('5', '5')
    """
    if isinstance(completion, str):
        return completion
    if isinstance(completion, Mapping):
        return _content(completion.get("content"))
    if isinstance(completion, Sequence) and completion:
        return _content(completion[-1].get("content")) if isinstance(completion[-1], Mapping) \
            else str(completion[-1])
    return ""


def _content(content: Any) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, Sequence):  # multimodal-style [{"type": "text", "text": ...}]
        return "".join(p.get("text", "") for p in content if isinstance(p, Mapping))
    return str(content)


def prompt_problem(prompt: Any) -> str:
    """The problem in a prompt: the string, or the last user message (conversational)."""
    if isinstance(prompt, str):
        return prompt
    if isinstance(prompt, Sequence):
        for m in reversed(prompt):
            if isinstance(m, Mapping) and m.get("role") == "user":
                return _content(m.get("content"))
    return ""


def answer_part(text: str) -> str:
    """The answer of a completion: the text after the last ``</think>``, else all of it.

    >>> answer_part("<think>2+3=5</think> The answer is 5."), answer_part("just 5")
    (' The answer is 5.', 'just 5')
    """
    return text.rsplit("</think>", 1)[1] if "</think>" in text else text


def gold_answer(answer: str) -> str:
    """The gold final answer: after GSM8K's ``####`` when present, thousands commas removed.

    >>> gold_answer("48/2 = <<48/2=24>>24\\n#### 1,024"), gold_answer("\\\\frac{1}{2}")
    ('1024', '\\\\frac{1}{2}')
    """
    if "####" in answer:
        answer = answer.rsplit("####", 1)[1]
    return _drop_thousands(answer.strip())


_THOUSANDS = re.compile(r"(?<=\d),(?=\d{3}(?!\d))")


def _drop_thousands(text: str) -> str:
    return _THOUSANDS.sub("", text)


# --------------------------------------------------------------------------- components
def accuracy_reward(completions: Sequence[Any], answer: Sequence[str] | None = None,
                    solution: Sequence[str] | None = None, **kwargs: Any) -> list[float | None]:
    """1.0 / 0.0 by ``math-verify``; ``None`` where the gold answer cannot be parsed.

    The gold comes from the ``answer`` column (or ``solution``, TRL's name for it).

    >>> accuracy_reward(["<think>48/2=24, 48+24=72</think> 72 clips", "<think>x</think> 71"],
    ...                 answer=["#### 72", "#### 72"])
    [1.0, 0.0]
    """
    from math_verify import parse, verify

    golds = answer if answer is not None else solution
    if golds is None:
        raise ValueError("accuracy needs an 'answer' (or 'solution') dataset column")
    out: list[float | None] = []
    for completion, gold in zip(completions, golds, strict=True):
        g = parse(gold_answer(str(gold)))
        if not g:
            out.append(None)  # no usable gold: skip, do not invent a 0
            continue
        pred = parse(_drop_thousands(answer_part(completion_text(completion)).replace("$", "")))
        out.append(1.0 if pred and verify(g, pred) else 0.0)
    return out


_FORMAT = re.compile(r"^\s*<think>(?P<think>.*?)</think>(?P<answer>.*)$", re.DOTALL)


def format_reward(completions: Sequence[Any], **kwargs: Any) -> list[float]:
    """1.0 if the completion is ``<think>`` non-empty reasoning ``</think>`` then an answer.

    >>> format_reward(["<think>a</think> 5", "5", "<think>a</think>", "<think>a</think>x</think>"])
    [1.0, 0.0, 0.0, 0.0]
    """
    out = []
    for c in completions:
        text = completion_text(c)
        m = _FORMAT.match(text)
        ok = (m is not None and m["think"].strip() != "" and m["answer"].strip() != ""
              and "<think>" not in m["think"] and "</think>" not in m["answer"]
              and "<think>" not in m["answer"])
        out.append(1.0 if ok else 0.0)
    return out


def tag_count_reward(completions: Sequence[Any], **kwargs: Any) -> list[float]:
    """Partial format credit, 0.25 per satisfied rule (see the module docstring).

    >>> tag_count_reward(["<think>a</think> 5", "<think>a", "a</think> 5", "x<think>a</think>"])
    [1.0, 0.5, 0.5, 0.5]
    """
    out = []
    for c in completions:
        text = completion_text(c)
        score = 0.0
        score += 0.25 if text.count("<think>") == 1 else 0.0
        score += 0.25 if text.count("</think>") == 1 else 0.0
        score += 0.25 if text.lstrip().startswith("<think>") else 0.0
        score += 0.25 if "</think>" in text and text.rsplit("</think>", 1)[1].strip() else 0.0
        out.append(score)
    return out


# --------------------------------------------------------------------------- gsrm component
class LocalScorer:
    """An in-process GSRM with the :class:`~rl_client.client.RewardClient` ``rewards`` shape.

    Why: ``--gsrm local`` trains without a server (a small model on one machine); errors from
    the backend or judge propagate (never a 0), as with the HTTP client.
    """

    def __init__(self, gsrm: Any = None, *, backend: str | None = None,
                 judge: str = "embedding", mode: str = "paper",
                 backend_kwargs: Mapping[str, Any] | None = None,
                 judge_kwargs: Mapping[str, Any] | None = None) -> None:
        if gsrm is None:
            from gsrm.model import GSRM

            gsrm = GSRM.from_names(backend=backend, judge=judge, mode=mode,
                                   backend_kwargs=backend_kwargs, judge_kwargs=judge_kwargs)
        self.gsrm = gsrm

    def score(self, items: Sequence[Any], *, on_error: str = "raise",
              **kwargs: Any) -> list[Any]:
        """Full results (:class:`~rl_client.client.RewardResult`, warnings and flags included)
        per item, as the HTTP client returns them; ``on_error="skip"``: ``None``s for a
        failed batch."""
        from gsrm.flags import result_flags
        from rl_client.client import RewardResult, normalize_item

        triples = [(it["problem"], it["teacher"], it["student"])
                   for it in (normalize_item(x) for x in items)]
        try:
            scored = self.gsrm.score_many(triples)
        except Exception:
            if on_error == "skip":
                return [None] * len(triples)
            raise
        return [RewardResult(
            reward=r.reward, step_rewards=list(r.step_rewards), teacher_steps=r.teacher.n_steps,
            student_steps=r.student.n_steps, normalized_reward=r.normalized_reward,
            warnings=[f"teacher: {w}" for w in r.teacher.warnings]
            + [f"student: {w}" for w in r.student.warnings],
            flags=result_flags(r)) for r in scored]

    def rewards(self, items: Sequence[Any], *, on_error: str = "raise",
                **kwargs: Any) -> list[float | None]:
        """One reward per item; with ``on_error="skip"`` a failed batch gives ``None``s."""
        return [None if r is None else r.reward
                for r in self.score(items, on_error=on_error)]


def make_gsrm_reward(gsrm: str | Any = "http://127.0.0.1:8000", *, async_: bool = False,
                     **kwargs: Any) -> RewardFunc:
    """The ``gsrm`` component: ``gsrm`` is a URL, ``"local"``, or a ready scorer object.

    Keyword arguments go to the client (URL) or :class:`LocalScorer` (``local``: ``backend``,
    ``judge``, ``mode``); see :func:`rl_client.adapters.make_trl_reward`.
    """
    from rl_client.adapters import make_trl_reward

    if isinstance(gsrm, str) and gsrm == "local":
        local_keys = {"backend", "judge", "mode", "backend_kwargs", "judge_kwargs"}
        scorer: Any = LocalScorer(**{k: v for k, v in kwargs.items() if k in local_keys})
        rest = {k: v for k, v in kwargs.items() if k not in local_keys}
        return make_trl_reward(scorer, async_=False, **rest)
    return make_trl_reward(gsrm, async_=async_, **kwargs)


def _named(func: Callable[..., Any], name: str) -> RewardFunc:
    def wrapper(prompts: Sequence[Any] | None = None, completions: Sequence[Any] = (),
                **kwargs: Any) -> list[float | None]:
        return func(completions=completions, prompts=prompts, **kwargs)

    wrapper.__name__ = name
    wrapper.__qualname__ = name
    wrapper.__doc__ = func.__doc__
    return wrapper


REWARDS: dict[str, Callable[..., RewardFunc]] = {
    "accuracy": lambda **_: _named(accuracy_reward, "accuracy"),
    "format": lambda **_: _named(format_reward, "format"),
    "tag_count": lambda **_: _named(tag_count_reward, "tag_count"),
    "gsrm": lambda **kw: make_gsrm_reward(**kw),
}


def get_reward_funcs(names: Sequence[str] = DEFAULT_REWARDS,
                     gsrm_kwargs: Mapping[str, Any] | None = None) -> list[RewardFunc]:
    """Reward functions by registry name, in order; ``gsrm_kwargs`` configure the gsrm one."""
    funcs = []
    for name in names:
        if name not in REWARDS:
            raise ValueError(f"unknown reward {name!r}; choose from {sorted(REWARDS)}")
        funcs.append(REWARDS[name](**(dict(gsrm_kwargs or {}) if name == "gsrm" else {})))
    return funcs


def parse_weights(spec: str | None, names: Sequence[str]) -> list[float]:
    """Weights in ``names`` order from ``"accuracy=15,gsrm=5"`` over the paper's defaults.

    >>> parse_weights("gsrm=5", ["accuracy", "gsrm"])
    [15.0, 5.0]
    """
    weights = dict(DEFAULT_WEIGHTS)
    for part in (spec or "").split(","):
        if not part.strip():
            continue
        key, sep, val = part.partition("=")
        key = key.strip()
        if not sep or key not in REWARDS:
            raise ValueError(f"bad weight {part!r}: use name=value with a name from "
                             f"{sorted(REWARDS)}")
        weights[key] = float(val)
    return [weights.get(n, 1.0) for n in names]
