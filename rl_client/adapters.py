"""Adapters that plug the GSRM reward into RL trainers: TRL, verl and OpenRLHF.

Why adapters and not one more trainer: each framework already has a reward hook; the adapter
only maps its calling convention to ``(problem, teacher, student)`` items for the reward client
(or an in-process scorer) and keeps the failure policy intact: a failure raises, and only an
explicit ``on_error="skip"`` turns it into ``None`` (TRL's "skip this sample").

- **TRL** (``GRPOTrainer(reward_funcs=[...])``): :func:`make_trl_reward` returns
  ``f(prompts, completions, **kwargs) -> list[float | None]``; the dataset's ``problem`` and
  ``teacher_reasoning`` columns arrive as keyword arguments. ``async_=True`` returns an
  ``async def`` variant, which TRL runs concurrently with the other reward functions. What a
  reward rests on less than the whole input for reaches the trainer: per batch, the count of
  items with each ``gsrm.flags`` name as a metric (``gsrm/truncated``, ``gsrm/hit_budget``,
  ``gsrm/loop``, ``gsrm/empty_student``, through TRL's ``log_metric``), per item the warnings
  (``gsrm_warnings`` in TRL's completions table via ``log_extra``, and ``f.last_results``).
- **verl** (``custom_reward_function.path=.../rl_client/adapters.py``,
  ``custom_reward_function.name=compute_score``): :func:`compute_score` per sample, or
  :func:`compute_score_batch` for verl's batch reward manager. The endpoint is read from
  ``GSRM_URL`` (default ``http://127.0.0.1:8000``) and ``GSRM_API_KEY``.
- **OpenRLHF**: no code needed: start ``gsrm-serve`` and pass
  ``--remote_rm_url http://127.0.0.1:8000/get_reward --label_key teacher_reasoning``;
  ``examples/openrlhf_remote_rm.py`` posts OpenRLHF's exact payload (see rl_client/README.md).

Only the student's reasoning is scored: the text after ``</think>`` is dropped
(``gsrm.model.strip_think``), as DESIGN.md section 1 prescribes.

Example::

    >>> class Fixed:                        # any object with .rewards(items, on_error=...)
    ...     def rewards(self, items, on_error="raise"):
    ...         return [float(len(it["student"])) for it in items]
    >>> f = make_trl_reward(Fixed())
    >>> f(prompts=["2+3?"], completions=[[{"role": "assistant", "content": "<think>2+3=5</think>5"}]],
    ...   problem=["2+3?"], teacher_reasoning=["Add 2 and 3."])
    [5.0]
"""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping, Sequence
from typing import Any

from rl_client.client import AsyncRewardClient, OnError, RewardClient
from rl_client.rewards import completion_text, prompt_problem


def build_items(prompts: Sequence[Any] | None, completions: Sequence[Any],
                problem: Sequence[str] | None = None,
                teacher_reasoning: Sequence[Any] | None = None) -> list[dict[str, Any]]:
    """Wire items from TRL's arguments (the problem falls back to the prompt's user turn).

    >>> build_items(["2+3?"], ["<think>2+3=5</think> 5"], None, ["Add 2 and 3."])
    [{'problem': '2+3?', 'teacher': 'Add 2 and 3.', 'student': '2+3=5'}]
    """
    from gsrm.model import strip_think

    n = len(completions)
    if teacher_reasoning is None:
        raise ValueError("the gsrm reward needs a 'teacher_reasoning' dataset column (the "
                         "teacher's reasoning for each problem)")
    if len(teacher_reasoning) != n:
        raise ValueError(f"teacher_reasoning has {len(teacher_reasoning)} entries for "
                         f"{n} completions")
    items = []
    for i, completion in enumerate(completions):
        if problem is not None:
            prob = problem[i]
        else:
            prob = prompt_problem(prompts[i]) if prompts is not None else ""
        teacher = teacher_reasoning[i]
        if not isinstance(teacher, str):
            teacher = [dict(s) for s in teacher]
        items.append({"problem": prob or "", "teacher": teacher,
                      "student": strip_think(completion_text(completion))})
    return items


def _log_skipped(name: str, rewards: Sequence[float | None], kwargs: Mapping[str, Any]) -> None:
    """Report the fraction of skipped samples through TRL's ``log_metric`` hook, if given."""
    log_metric = kwargs.get("log_metric")
    if callable(log_metric) and rewards:
        log_metric(f"{name}/skipped", sum(r is None for r in rewards) / len(rewards))


def log_flags(name: str, results: Sequence[Any], kwargs: Mapping[str, Any]) -> None:
    """Count each ``gsrm.flags`` name over a batch into TRL's metrics, and the warnings per item.

    ``log_metric("gsrm/hit_budget", 3.0)``: 3 of this call's items stopped at the token
    budget (TRL averages the value over the calls of a logging step); ``log_extra`` adds a
    ``gsrm_warnings`` column to TRL's completions table, one entry per sample. Results are
    ``RewardResult``-like (``flags``, ``warnings``) or None (skipped).
    """
    from gsrm.flags import FLAGS

    log_metric = kwargs.get("log_metric")
    if callable(log_metric) and results:
        for flag in FLAGS:
            n = sum(flag in getattr(r, "flags", ()) for r in results if r is not None)
            log_metric(f"{name}/{flag}", float(n))
    log_extra = kwargs.get("log_extra")
    if callable(log_extra) and results:
        log_extra(f"{name}_warnings", ["; ".join(getattr(r, "warnings", ()))
                                       if r is not None else "" for r in results])


def _scores(scorer: Any, items: list[dict[str, Any]], on_error: OnError) -> tuple[
        list[float | None], list[Any]]:
    """(rewards, full results) from a scorer with ``score`` (warnings and flags kept), else
    rewards only from one with just ``rewards``."""
    if hasattr(scorer, "score"):
        results = list(scorer.score(items, on_error=on_error))
        return [None if r is None else r.reward for r in results], results
    return list(scorer.rewards(items, on_error=on_error)), []


class TrlReward:
    """Synchronous TRL reward function backed by a scorer (``.rewards(items, on_error=)``)."""

    def __init__(self, scorer: Any, *, name: str = "gsrm", on_error: OnError = "raise",
                 problem_key: str = "problem", teacher_key: str = "teacher_reasoning") -> None:
        self.scorer = scorer
        self.__name__ = name  # TRL logs rewards/<__name__>/mean
        self.on_error = on_error
        self.problem_key = problem_key
        self.teacher_key = teacher_key
        #: the last call's per-item results (reward, warnings, flags; None where skipped)
        self.last_results: list[Any] = []

    def _items(self, prompts: Any, completions: Any, kwargs: Mapping[str, Any]) -> list[dict]:
        return build_items(prompts, completions, kwargs.get(self.problem_key),
                           kwargs.get(self.teacher_key))

    def __call__(self, prompts: Sequence[Any] | None = None, completions: Sequence[Any] = (),
                 **kwargs: Any) -> list[float | None]:
        items = self._items(prompts, completions, kwargs)
        out, self.last_results = _scores(self.scorer, items, self.on_error)
        _log_skipped(self.__name__, out, kwargs)
        log_flags(self.__name__, self.last_results, kwargs)
        return out


class AsyncTrlReward(TrlReward):
    """``async`` TRL reward function backed by an :class:`AsyncRewardClient`.

    The client is created on first use, inside TRL's reward event loop, because an
    ``httpx.AsyncClient``'s connections belong to the loop that opened them.
    """

    def __init__(self, client_kwargs: Mapping[str, Any], **kwargs: Any) -> None:
        super().__init__(None, **kwargs)
        self.client_kwargs = dict(client_kwargs)
        self._lock = threading.Lock()

    def _client(self) -> AsyncRewardClient:
        with self._lock:
            if self.scorer is None:
                self.scorer = AsyncRewardClient(**self.client_kwargs)
            return self.scorer

    async def __call__(self, prompts: Sequence[Any] | None = None,  # type: ignore[override]
                       completions: Sequence[Any] = (), **kwargs: Any) -> list[float | None]:
        items = self._items(prompts, completions, kwargs)
        self.last_results = list(await self._client().score(items, on_error=self.on_error))
        out = [None if r is None else r.reward for r in self.last_results]
        _log_skipped(self.__name__, out, kwargs)
        log_flags(self.__name__, self.last_results, kwargs)
        return out


def make_trl_reward(scorer: str | Any = "http://127.0.0.1:8000", *, async_: bool = False,
                    name: str = "gsrm", on_error: OnError = "raise",
                    problem_key: str = "problem", teacher_key: str = "teacher_reasoning",
                    **client_kwargs: Any) -> TrlReward:
    """A TRL reward function for the GSRM reward.

    ``scorer`` is the endpoint's base URL (a :class:`RewardClient` is built with
    ``client_kwargs``: ``api_key``, ``timeout``, ``max_retries``, ``options``, ...), a client,
    or any object with ``rewards(items, on_error=...)`` (e.g. ``rewards.LocalScorer``).
    ``async_=True`` (URL only) returns an ``async`` function using :class:`AsyncRewardClient`.

    Example::

        >>> f = make_trl_reward("http://127.0.0.1:8000", options={"mode": "paper"})
        >>> f.__name__
        'gsrm'
    """
    common = {"name": name, "on_error": on_error, "problem_key": problem_key,
              "teacher_key": teacher_key}
    if async_:
        if not isinstance(scorer, str):
            raise ValueError("async_=True needs the endpoint URL (the async client is built "
                             "inside TRL's event loop)")
        return AsyncTrlReward({"base_url": scorer, "on_error": on_error, **client_kwargs},
                              **common)
    if isinstance(scorer, str):
        scorer = RewardClient(scorer, on_error=on_error, **client_kwargs)
    elif client_kwargs:
        raise ValueError(f"client options {sorted(client_kwargs)} need a URL, not a scorer")
    return TrlReward(scorer, **common)


# --------------------------------------------------------------------------- verl
_VERL_CLIENT: RewardClient | None = None
_VERL_LOCK = threading.Lock()


def _verl_client() -> RewardClient:
    """One client per worker process, built on first use from GSRM_URL / GSRM_API_KEY."""
    global _VERL_CLIENT
    with _VERL_LOCK:
        if _VERL_CLIENT is None:
            _VERL_CLIENT = RewardClient(
                os.environ.get("GSRM_URL", "http://127.0.0.1:8000"),
                api_key=os.environ.get("GSRM_API_KEY") or None,
                timeout=float(os.environ.get("GSRM_TIMEOUT", "120")),
            )
        return _VERL_CLIENT


def verl_item(solution_str: str, ground_truth: Any,
              extra_info: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """One wire item from verl's arguments.

    ``ground_truth`` is the teacher's reasoning (text or steps), or a mapping with
    ``teacher_reasoning`` (and optionally ``problem``); the problem may also come from
    ``extra_info["problem"]`` / ``extra_info["question"]``.

    >>> verl_item("<think>2+3=5</think> 5", "Add 2 and 3.", {"question": "2+3?"})
    {'problem': '2+3?', 'teacher': 'Add 2 and 3.', 'student': '2+3=5'}
    """
    from gsrm.model import strip_think

    extra = dict(extra_info or {})
    problem = extra.get("problem") or extra.get("question") or ""
    teacher = ground_truth
    if isinstance(ground_truth, Mapping):
        teacher = ground_truth.get("teacher_reasoning") or ground_truth.get("teacher")
        problem = ground_truth.get("problem") or problem
    if teacher is None or (isinstance(teacher, str) and not teacher.strip()):
        raise ValueError("verl ground_truth must carry the teacher's reasoning "
                         "(a string, or {'teacher_reasoning': ...})")
    return {"problem": problem, "teacher": teacher, "student": strip_think(solution_str)}


def compute_score(data_source: str, solution_str: str, ground_truth: Any,
                  extra_info: Mapping[str, Any] | None = None, **kwargs: Any) -> float:
    """verl's custom reward function: the GSRM reward of one response (raises on failure)."""
    out = _verl_client().rewards([verl_item(solution_str, ground_truth, extra_info)])
    assert out[0] is not None  # on_error="raise": a failure raised above
    return out[0]


def compute_score_batch(data_sources: Sequence[str], solution_strs: Sequence[str],
                        ground_truths: Sequence[Any],
                        extra_infos: Sequence[Mapping[str, Any] | None] | None = None,
                        **kwargs: Any) -> list[float]:
    """verl's batch reward manager hook: one request (split as needed) for the whole batch."""
    infos = list(extra_infos) if extra_infos is not None else [None] * len(solution_strs)
    items = [verl_item(s, g, e) for s, g, e in zip(solution_strs, ground_truths, infos,
                                                   strict=True)]
    return [float(r) for r in _verl_client().rewards(items) if r is not None]


# --------------------------------------------------------------------------- OpenRLHF
def openrlhf_payload(queries: Sequence[str], prompts: Sequence[str] | None,
                     labels: Sequence[Any]) -> dict[str, Any]:
    """The body OpenRLHF posts to ``--remote_rm_url`` (``/get_reward`` on gsrm-serve).

    >>> openrlhf_payload(["<|im_start|>user\\nq<|im_end|>\\n<|im_start|>assistant\\na"],
    ...                  None, ["teacher"])
    {'query': ['<|im_start|>user\\nq<|im_end|>\\n<|im_start|>assistant\\na'], 'labels': ['teacher']}
    """
    body: dict[str, Any] = {"query": list(queries), "labels": list(labels)}
    if prompts is not None:
        body["prompts"] = list(prompts)
    return body
