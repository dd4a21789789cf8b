"""Decomposition generators behind one small interface, chosen by name.

Why a registry: the same GSRM runs as a 135M model on a laptop CPU (``transformers``, the
default), against a GPU server someone else runs (``openai``: vLLM, SGLang, llama.cpp), or
in-process on a GPU (``vllm``). ``sentences`` is a model-free baseline (one step per sentence)
that keeps fast tests and smoke runs free of model weights.

Every backend decomposes ``(problem, reasoning)`` items in batches and reports, per item, the
generated text, token counts, and whether the input was truncated to ``max_input_tokens`` or
the output stopped at ``max_new_tokens`` — truncation is flagged, never silent.

Example::

    >>> from gsrm.backends import get_backend
    >>> b = get_backend("sentences")
    >>> g = b.decompose_many([("What is 2+3?", "First add 2 and 3. So the sum is 5.")])[0]
    >>> g.text.splitlines()[0]
    '[Meta-reasoning 1]: First add 2 and 3.'
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import re
import threading
from abc import ABC, abstractmethod
from collections import OrderedDict
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from gsrm.anchor import MAX_ANCHORS, find_skip, rewriting_steps
from gsrm.prompts import DEFAULT_SHOTS, Message, build_messages
from gsrm.text import last_piece, run_on_cuts, split_sentences  # noqa: F401  (re-exported)

DecomposeItem = tuple[str, str]  # (problem, reasoning)


class BackendError(RuntimeError):
    """A backend could not generate (model failed to load, server unreachable, ...)."""


def cut_at_stop(text: str, stop: Sequence[str]) -> tuple[str, bool]:
    r"""``text`` cut before the first stop string, and whether one occurred.

    >>> cut_at_stop("a\n[Meta-reasoning 2]: b", ["\n[Meta-reasoning 2]"])
    ('a', True)
    """
    at = min((i for i in (text.find(s) for s in stop if s) if i >= 0), default=-1)
    return (text[:at], True) if at >= 0 else (text, False)


class Generation(BaseModel):
    """One generated completion and the facts needed to trust it."""

    text: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    input_truncated: bool = False
    hit_max_new_tokens: bool = False
    stopped_in_loop: bool = False
    stopped_at_trace_end: bool = False
    continued: int = 0  # times resumed after ending before the trace's end
    anchored: int = 0  # answers cut back and re-started on a trace sentence they skipped
    spans: list[tuple[int, int]] | None = None  # a rule decomposer's step spans, in step order


class Backend(ABC):
    """Generates decompositions. Subclasses implement ``generate`` (chat) or ``decompose_many``."""

    name: str = "backend"

    def __init__(
        self,
        max_new_tokens: int = 1024,
        max_input_tokens: int = 6144,
        shots: Sequence[str] | int | None = None,
    ) -> None:
        self.max_new_tokens = max_new_tokens
        self.max_input_tokens = max_input_tokens
        if shots is None:  # a fine-tuned adapter is prompted with none (TransformersBackend)
            shots = DEFAULT_SHOTS
        self.shots = shots if isinstance(shots, int) else tuple(shots)

    @property
    def model_id(self) -> str:
        return ""

    def identity(self) -> dict[str, Any]:
        """Everything that changes the output; hashed into the decomposition cache key."""
        return {
            "backend": self.name,
            "model": self.model_id,
            "max_new_tokens": self.max_new_tokens,
            "max_input_tokens": self.max_input_tokens,
            "shots": self.shots,
        }

    def cache_key(self) -> str:
        blob = json.dumps(self.identity(), sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    # -- chat generation ---------------------------------------------------------------
    #: True for model-free decomposers that make their own steps (and spans); the GSRM then
    #: uses their decomposition as it is instead of segmenting and describing
    rule_based: bool = False
    #: True for LM backends that the two-stage GSRM asks to describe step spans (``generate``
    #: with ``stop``); other backends decompose whole traces (``decompose_many``)
    describes_spans: bool = False

    @abstractmethod
    def generate(
        self, conversations: Sequence[list[Message]], max_new_tokens: int | None = None,
        stop: Sequence[str] | None = None,
    ) -> list[Generation]:
        """Greedy chat completions for a batch of conversations.

        ``stop``: strings that end a completion (the text is cut before the first of them),
        the same in every backend.
        """

    # -- decomposition -----------------------------------------------------------------
    def count_tokens(self, text: str) -> int:
        """Token count used for input truncation; backends with a tokenizer override this."""
        return max(1, len(text) // 4)

    def truncate(self, text: str, max_tokens: int) -> str:
        return text[: max(0, max_tokens) * 4]

    def fit(self, problem: str, reasoning: str) -> tuple[list[Message], bool]:
        """Messages for one item, cutting the reasoning's tail if the prompt exceeds the limit."""
        messages = build_messages(problem, reasoning, self.shots)
        total = sum(self.count_tokens(m["content"]) for m in messages) + 8 * len(messages)
        if total <= self.max_input_tokens:
            return messages, False
        over = total - self.max_input_tokens
        keep = self.count_tokens(reasoning) - over - 8
        if keep <= 0:
            raise BackendError(
                f"the prompt without the reasoning already exceeds max_input_tokens="
                f"{self.max_input_tokens}; raise it or use fewer shots"
            )
        cut = self.truncate(reasoning, keep)
        return build_messages(problem, cut, self.shots), True

    def decompose_many(self, items: Sequence[DecomposeItem]) -> list[Generation]:
        """Decompose (problem, reasoning) items; the result keeps input order."""
        fitted = [self.fit(p, r) for p, r in items]
        # the trace each prompt holds (None where it was cut to fit), for backends that
        # stop a generation once it has covered its trace
        traces = [None if cut else r for (_, cut), (_, r) in zip(fitted, items)]
        gens = self.generate_decompositions([m for m, _ in fitted], traces)
        for g, (_, truncated) in zip(gens, fitted):
            g.input_truncated = g.input_truncated or truncated
        return gens

    def generate_decompositions(self, conversations: Sequence[list[Message]],
                                traces: Sequence[str | None]) -> list[Generation]:
        """``generate`` for decomposition prompts; ``traces[i]`` is the reasoning in prompt i."""
        return self.generate(conversations)


# --------------------------------------------------------------------------- sentences
class SentenceBackend(Backend):
    """Model-free baseline: every sentence of the trace becomes one step.

    Meta-reasoning and sub-problem are both the sentence and the answer is its last number
    (or the sentence). It is a reference point and a fast-test stand-in, not a GSRM.
    """

    name = "sentences"
    rule_based = True

    @property
    def model_id(self) -> str:
        return "rule-based"

    def generate(
        self, conversations: Sequence[list[Message]], max_new_tokens: int | None = None,
        stop: Sequence[str] | None = None,
    ) -> list[Generation]:
        raise BackendError("the 'sentences' backend only decomposes; it has no chat model")

    def decompose_many(self, items: Sequence[DecomposeItem]) -> list[Generation]:
        from gsrm.judges import answer_number
        from gsrm.text import spans_from_starts

        out: list[Generation] = []
        for _, reasoning in items:
            lines: list[str] = []
            starts: list[int] = []
            cursor = 0
            for i, sent in enumerate(split_sentences(reasoning), start=1):
                at = reasoning.find(sent, cursor)
                starts.append(at)
                cursor = at + len(sent)
                flat = " ".join(sent.split())
                num = answer_number(sent)
                ans = (f"{num:g}" if num is not None else flat)
                lines += [f"[Meta-reasoning {i}]: {flat}", f"[Sub-problem {i}]: {flat}",
                          f"[Answer {i}]: {ans}"]
            out.append(Generation(text="\n".join(lines), completion_tokens=len(lines),
                                  spans=spans_from_starts(reasoning, starts[1:])))
        return out


# --------------------------------------------------------------------------- transformers
def repeating_period(ids: Sequence[int], min_period: int = 4, max_period: int = 64,
                     repeats: int = 3) -> int | None:
    """The period p if the last ``repeats * p`` tokens are one p-token block repeated, else None.

    Small models decoding greedily fall into loops ("step 2 ... step 3 ... " with the same
    text); stopping there saves the rest of ``max_new_tokens`` and is reported, not hidden.

    >>> repeating_period([9, 1, 2, 3, 4, 1, 2, 3, 4, 1, 2, 3, 4])
    4
    >>> repeating_period([1, 2, 3, 4, 5, 6, 7, 8]) is None
    True
    """
    n = len(ids)
    for p in range(min_period, max_period + 1):
        if repeats * p > n:
            break
        tail = ids[n - repeats * p :]
        block = tail[-p:]
        if all(tail[k * p : (k + 1) * p] == block for k in range(repeats - 1)):
            return p
    return None


_DIGITS = re.compile(r"\d+")


def repeating_lines(text: str, max_period: int = 3, repeats: int = 4, min_chars: int = 60) -> bool:
    r"""True if the last complete lines are a block of 1-3 lines repeated ``repeats`` times.

    Digits are masked first, because a looping decomposition usually keeps counting
    ("[Meta-reasoning 7]: same text", "[Meta-reasoning 8]: same text", ...), which defeats an
    exact token-period test. Four repeats, not three, because an honest decomposition can
    repeat a block three times with only its numbers changed ("day 1", "day 2", "day 3").

    >>> repeating_lines("".join(f"[Meta-reasoning {i}]: The farmer makes $25 in all.\n"
    ...                         for i in (2, 3, 4, 5)))
    True
    >>> repeating_lines("[Answer 1]: 5\n[Answer 2]: 6\n[Answer 3]: 7\n")
    False
    """
    lines = [_DIGITS.sub("#", ln.strip()) for ln in text.split("\n")[:-1]]
    lines = [ln for ln in lines if ln]
    for p in range(1, max_period + 1):
        if repeats * p > len(lines):
            break
        tail = lines[len(lines) - repeats * p :]
        block = tail[-p:]
        if sum(len(x) for x in block) * repeats < min_chars:
            continue
        if all(tail[k * p : (k + 1) * p] == block for k in range(repeats - 1)):
            return True
    return False


_STEP_LINE = re.compile(r"^\[(Meta-reasoning|Sub-problem|Answer) (\d+)\]:[ \t]*(.*)$", re.MULTILINE)


def _norm(text: str) -> str:
    return " ".join(text.lower().split())


def repeated_step_start(text: str, in_a_row: int = 3, trusted: int = 0) -> int | None:
    r"""Where the first step that repeats an earlier step starts (a character offset), or None.

    A step repeats when its sub-problem *and* answer equal those of an earlier step (case and
    spacing ignored, numbers not masked): an identical step adds nothing, and a small model
    that has covered the trace tends to go on writing copies of its steps until the token
    budget cuts one in half. Only complete steps count (the answer line ended by a newline).
    A step also repeats when its sub-problem is the same as in each of the ``in_a_row - 1``
    steps before it (complete sub-problem lines): once the trace is covered, or when it is
    stuck, the model keeps re-asking one question with new, invented answers. Fewer in a row,
    or the same wording further apart, is allowed, since a clumsy but honest decomposition can
    word two different questions alike ("How many are male?" for two different groups).
    Decompositions use ``in_a_row=4`` (``DECOMPOSE_IN_A_ROW``): there ``covered_step_start``
    catches invented steps after the trace's end more precisely, and a terse model asks "How
    many pounds?" for three dogs in a row honestly (held-out GSM8K: three in a row cut 35 of
    150 decompositions of the 2026-11-30 adapter, most of them mid-trace). Without a trace
    (chat generation) three in a row stops. ``trusted``: steps 1..trusted answered by
    rewriting successive trace sentences (``gsrm.anchor.rewriting_steps``); a run of one
    question among them, and the step right after them, is not a loop.

    >>> t = ("[Meta-reasoning 1]: a\n[Sub-problem 1]: How many?\n[Answer 1]: 5 laps.\n"
    ...      "[Meta-reasoning 2]: b\n[Sub-problem 2]: How many?\n[Answer 2]: 5  Laps.\n[Meta")
    >>> repeated_step_start(t) == t.index("[Meta-reasoning 2]")
    True
    >>> repeated_step_start(t.replace("5  Laps", "7 laps")) is None
    True
    """
    starts: dict[int, int] = {}
    subs: dict[int, str] = {}
    asked: list[str] = []  # complete sub-problems, in order
    seen: set[tuple[str, str]] = set()
    for m in _STEP_LINE.finditer(text):
        kind, num, body = m.group(1), int(m.group(2)), m.group(3)
        starts.setdefault(num, m.start())
        complete = m.end() < len(text)  # the line is ended by a newline
        if kind == "Sub-problem":
            subs[num] = _norm(body)
            if complete and subs[num]:
                asked.append(subs[num])
                if (len(asked) >= in_a_row and len(set(asked[-in_a_row:])) == 1
                        and num > trusted + 1):
                    return starts[num]
        elif kind == "Answer" and complete:
            key = (subs.get(num, ""), _norm(body))
            if not key[0] or not key[1]:
                continue
            if key in seen:
                return starts[num]
            seen.add(key)
    return None


@dataclass
class _AnchorState:
    """Per-row bookkeeping of ``TransformersBackend._anchor_ids``."""

    seen: int = -1  # complete lines when last examined
    steps: set[int] = field(default_factory=set)  # steps whose answer was re-anchored


COVER_MIN_F1 = 0.3
DECOMPOSE_IN_A_ROW = 4  # one question asked this many times in a row ends a decomposition
CONTINUE_ROUNDS = 2


@functools.lru_cache(maxsize=1024)
def _trace_end(reasoning: str) -> tuple[str, str, float | None]:
    """The trace's ``last_piece``, normalized, and the number it states (``answer_number``).

    Memoized: the stop checks ask for it every few tokens of every row of a batch.
    """
    from gsrm.judges import answer_number

    end = last_piece(reasoning)
    return end, _norm(end), answer_number(end) if end else None


def covered_step_start(text: str, reasoning: str) -> int | None:
    r"""Where a step begun after the trace was covered starts (a character offset), or None.

    The trace is covered once a complete step's answer restates its end (``last_piece``):
    the end occurs in the answer (case and spacing ignored), or both state the same final
    number (``gsrm.judges.answer_number``) and share content words (token F1 >= 0.3, so a
    bare coincidence of a small number does not count). A step that starts after the first
    such step is one the trace does not take: the instruction says not to add steps, yet a
    small model that has reached the end goes on inventing questions until the token budget
    cuts one in half. The caller drops that step and what follows and says so.

    >>> t = ("[Meta-reasoning 1]: a\n[Sub-problem 1]: Eggs sold?\n[Answer 1]: She sells 9 eggs.\n"
    ...      "[Meta-reasoning 2]: b\n[Sub-problem 2]: Money?\n[Answer 2]: She makes $18 a day.\n"
    ...      "[Meta-reasoning 3]: c\n[Sub-")
    >>> trace = "She sells 16 - 7 = 9 eggs. She makes 9 * 2 = $18 every day."
    >>> covered_step_start(t, trace) == t.index("[Meta-reasoning 3]")
    True
    >>> covered_step_start(t, trace + " Then she buys 3 hens.") is None
    True
    """
    from gsrm.judges import answer_number, numbers_equal, token_f1

    end, end_norm, end_num = _trace_end(reasoning)
    if not end:
        return None

    def covers(answer: str) -> bool:
        if end_norm in _norm(answer):
            return True
        num = answer_number(answer)
        return (end_num is not None and num is not None and numbers_equal(num, end_num)
                and token_f1(answer, end) >= COVER_MIN_F1)

    starts: dict[int, int] = {}
    covered_at: int | None = None
    for m in _STEP_LINE.finditer(text):
        kind, num, body = m.group(1), int(m.group(2)), m.group(3)
        starts.setdefault(num, m.start())
        if covered_at is not None and num > covered_at:
            return starts[num]
        if (covered_at is None and kind == "Answer" and m.end() < len(text)
                and body.strip() and covers(body)):
            covered_at = num
    return None


def uncovered_resume_point(text: str, reasoning: str) -> int | None:
    r"""Where to resume a finished decomposition that never reached its trace's end, or None.

    Why: a small model often writes "Finally, ..." and its final-answer line a step or two
    early, leaving the trace's last sentences without a step (held-out GSM8K: the fine-tuned
    adapter wrote 2.85 steps a trace for 3.8 human ones). A finished generation is resumed
    when no step's answer mentions the end of the trace (``last_piece``) even loosely: the
    end inside the answer; for an end that states a number, the same final number
    (``gsrm.judges.answer_number``) or content-token F1 >= 0.6 (neighbouring GSM8K lines share
    words, so overlap alone says little); else content-token F1 >= 0.3. The offset returned
    is the end of the last ``[Answer i]`` line (the final-answer line and anything after it
    are dropped); None when the end is covered or there is no answer line.

    >>> t = "[Meta-reasoning 1]: m\n[Sub-problem 1]: Eggs?\n[Answer 1]: 9 eggs\nSo the final answer is: 18"
    >>> trace = "She sells 16 - 7 = 9 eggs. She makes 9 * 2 = $18 every day."
    >>> t[:uncovered_resume_point(t, trace)]
    '[Meta-reasoning 1]: m\n[Sub-problem 1]: Eggs?\n[Answer 1]: 9 eggs'
    >>> uncovered_resume_point(t.replace("9 eggs", "$18"), trace) is None
    True
    """
    from gsrm.judges import answer_number, numbers_equal, token_f1

    end, end_norm, end_num = _trace_end(reasoning)
    if not end:
        return None
    resume: int | None = None
    for m in _STEP_LINE.finditer(text):
        if m.group(1) != "Answer":
            continue
        body = m.group(3)
        if not body.strip():
            continue
        num, f1 = answer_number(body), token_f1(body, end)
        if end_num is not None:  # a numeric end: its number, or a close paraphrase
            hit = (num is not None and numbers_equal(num, end_num)) or f1 >= 2 * COVER_MIN_F1
        else:
            hit = f1 >= COVER_MIN_F1
        if hit or end_norm in _norm(body):
            return None
        resume = m.end()
    return resume


def stop_cut(text: str, trace: str | None) -> tuple[int | None, bool]:
    """Where the loop and trace stops cut a completion, and whether at the trace's end.

    Without a trace (chat generation): ``repeated_step_start`` with three asks in a row.
    With one (decompositions): four in a row (``DECOMPOSE_IN_A_ROW``) unless the answers
    walk through the trace sentence by sentence (``gsrm.anchor.rewriting_steps``), and
    ``covered_step_start``; the earlier cut wins, and ``True`` says it was the trace-end one.
    The one place that decides which stops apply: the decoding check, the final cut and the
    resume all ask it.
    """
    if trace is None:
        return repeated_step_start(text), False
    cut = repeated_step_start(text, DECOMPOSE_IN_A_ROW)
    if cut is not None:  # the exemption only removes cuts: walk the trace only when one is hit
        cut = repeated_step_start(text, DECOMPOSE_IN_A_ROW, rewriting_steps(text, trace))
    covered = covered_step_start(text, trace)
    if covered is not None and (cut is None or covered < cut):
        return covered, True
    return cut, False


def is_looping(ids: Sequence[int], decode: Callable[[Sequence[int]], str]) -> bool:
    """A generation tail is stuck: a repeating token block or repeating (digit-masked) lines."""
    return repeating_period(ids) is not None or repeating_lines(decode(ids))


def _loop_stopper(prompt_len: int, should_stop: Callable[[list[int]], bool], min_new: int = 48,
                  every: int = 4) -> Any:
    """A transformers StoppingCriteria asking ``should_stop`` (checked every few steps).

    Used by ``model.generate`` (prompt lookup); plain greedy decoding asks the same callable
    from ``gsrm.decode.greedy_decode`` with the same ``min_new``/``every``.
    """
    import torch
    from transformers import StoppingCriteria

    class LoopStop(StoppingCriteria):
        def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
            done = torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
            n_new = input_ids.shape[1] - prompt_len
            if n_new < min_new or n_new % every:
                return done
            for row, ids in enumerate(input_ids[:, prompt_len:].tolist()):
                done[row] = should_stop(ids)
            return done

    return LoopStop()


DEVICE_ENV = "GSRM_DEVICE"
"""Environment variable with the default torch device of the transformers backend (``cpu``)."""


def default_device() -> str:
    """The transformers backend's device when none is given: ``$GSRM_DEVICE``, else ``cpu``.

    Why an environment variable: it reaches every backend a process builds (the slow tests, an
    in-process GSRM inside a trainer) without threading a flag through each caller; it is the
    same variable ``gsrm-serve`` reads for its ``--device`` setting.

    >>> default_device() in ("cpu", os.environ.get("GSRM_DEVICE", "").strip())
    True
    """
    return os.environ.get(DEVICE_ENV, "").strip() or "cpu"


@functools.cache
def resolve_dtype(dtype: str, device: str = "cpu") -> str:
    """The torch dtype name for ``dtype``; ``"auto"`` picks bfloat16 where it is fast.

    Why: on a CPU with AVX512-BF16/AMX (and on a CUDA GPU with bf16) the 135M GSRM decodes
    about 2.4x faster in bfloat16 than in float32, with the same held-out figures (eval
    README); on a CPU without native bf16 support, bfloat16 is emulated and slower.
    Memoized: ``identity()``, hence every decomposition cache key, asks for it.
    """
    if dtype != "auto":
        return dtype
    import torch

    if device.startswith("cuda"):
        return "bfloat16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "float16"
    try:
        fast = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        fast = False
    return "bfloat16" if fast else "float32"


class TransformersBackend(Backend):
    """A local HF causal LM (default: the embedded SmolLM2-135M-Instruct), batched greedy decoding.

    ``model`` is a local folder or hub id (None: the embedded default, converted once to the
    cache, see ``gsrm.weights``); ``adapter`` a peft LoRA folder merged at load time, where
    ``"auto"`` (the default) means the fine-tuned ``describer`` adapter shipped in the package
    when the base model is the embedded one (``gsrm.weights.resolve_adapter``). ``shots``
    left unset means none with an adapter (it was trained zero-shot) and ``DEFAULT_SHOTS``
    without.
    ``prompt_lookup`` > 0 enables prompt-lookup (n-gram copy) speculation, which gives the
    same greedy output; transformers runs it one sequence at a time (``benchmarks/decode.py``
    measures whether it pays). ``prefix_cache`` reuses the shared system/few-shot prefix's
    key/value cache across calls (see ``generate``); it is not combined with prompt lookup,
    because in transformers 5.23 lookup on a pre-filled cache did not reproduce plain greedy.
    ``stop_loops`` ends a sequence once it is stuck in a loop (see ``is_looping``) or has
    written a step identical to an earlier one (``repeated_step_start``; the repeated step and
    what follows are dropped); the result says so (``stopped_in_loop``), and so do the
    structure's warnings. In decompositions it also ends one that begins a step after the
    trace was covered (``covered_step_start``; ``stopped_at_trace_end``), and resumes, up to
    ``CONTINUE_ROUNDS`` times, one that ended before reaching the trace's end
    (``uncovered_resume_point``: the final-answer line is dropped and decoding goes on from a
    new ``[Meta-reasoning i]:`` line, in place in the running batch; ``continued``), and
    re-anchors, up to ``gsrm.anchor.MAX_ANCHORS`` times, an answer that jumped over a trace
    sentence while the decomposition was rewriting the trace sentence by sentence
    (``gsrm.anchor.find_skip``: the answer is cut back to its header and made to start with
    the skipped sentence's opening words; ``anchored``).
    """

    name = "transformers"
    describes_spans = True

    def __init__(
        self,
        model: str | None = None,
        adapter: str | None = "auto",
        device: str | None = None,
        dtype: str = "float32",
        batch_size: int = 8,
        prompt_lookup: int = 0,
        threads: int | None = None,
        stop_loops: bool = True,
        prefix_cache: bool = True,
        min_prefix_tokens: int = 64,
        **kwargs: Any,
    ) -> None:
        from gsrm.weights import resolve_adapter

        resolved = resolve_adapter(adapter, model)
        if kwargs.get("shots") is None:
            kwargs["shots"] = () if resolved else DEFAULT_SHOTS
        super().__init__(**kwargs)
        self.stop_loops = stop_loops
        self.prefix_cache = prefix_cache
        self.min_prefix_tokens = min_prefix_tokens
        self._kv_cache: OrderedDict[tuple[int, ...], Any] = OrderedDict()
        self.model_path = model
        self.adapter = resolved
        self.device = device or default_device()
        self.dtype = dtype
        self.batch_size = batch_size
        self.prompt_lookup = prompt_lookup
        self.threads = threads
        self._model: Any = None
        self._tok: Any = None
        self._lock = threading.Lock()

    @property
    def model_id(self) -> str:
        base = self.model_path or "smollm2-135m-instruct (embedded)"
        return f"{base}+{self.adapter}" if self.adapter else base

    def identity(self) -> dict[str, Any]:
        ident = super().identity()
        stops = (f"lines+repeated-steps+asked-{DECOMPOSE_IN_A_ROW}-in-a-row+trace-covered"
                 "+rewriting-not-a-loop")
        if not self.prompt_lookup:  # model.generate has no in-place resume or re-anchoring
            stops += f"+resume-uncovered-{CONTINUE_ROUNDS}-in-place+anchor-skips-{MAX_ANCHORS}"
        else:
            ident["prompt_lookup"] = self.prompt_lookup
        ident["stop_loops"] = stops if self.stop_loops else False
        ident["dtype"] = resolve_dtype(self.dtype, self.device)
        if self.adapter:
            st = Path(self.adapter) / "adapter_model.safetensors"
            ident["adapter_mtime"] = st.stat().st_mtime if st.exists() else None
        return ident

    def load(self) -> None:
        """Load tokenizer and model (idempotent); raises BackendError with the cause."""
        with self._lock:
            if self._model is not None:
                return
            try:
                import torch
                from transformers import AutoModelForCausalLM, AutoTokenizer
                from transformers.utils import logging as hf_logging

                from gsrm.weights import default_model_dir

                hf_logging.disable_progress_bar()
                if self.threads:
                    torch.set_num_threads(self.threads)
                path = self.model_path or str(default_model_dir())
                tok = AutoTokenizer.from_pretrained(path)
                tok.padding_side = "left"
                if tok.pad_token is None:
                    tok.pad_token = tok.eos_token
                dtype = getattr(torch, resolve_dtype(self.dtype, self.device))
                model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
                if self.adapter:
                    from peft import PeftModel

                    model = PeftModel.from_pretrained(model, self.adapter).merge_and_unload()
                model.to(self.device).eval()
            except Exception as exc:
                raise BackendError(f"could not load model {self.model_id!r}: {exc}") from exc
            self._tok, self._model = tok, model

    def count_tokens(self, text: str) -> int:
        self.load()
        return len(self._tok(text, add_special_tokens=False)["input_ids"])

    def truncate(self, text: str, max_tokens: int) -> str:
        self.load()
        ids = self._tok(text, add_special_tokens=False)["input_ids"][: max(0, max_tokens)]
        return self._tok.decode(ids)

    def _prompt_ids(self, conversation: list[Message]) -> list[int]:
        ids = self._tok.apply_chat_template(conversation, add_generation_prompt=True, tokenize=True)
        if isinstance(ids, dict) or hasattr(ids, "keys"):
            ids = ids["input_ids"]
        return list(ids)

    def _prefix_ids(self, conversation: list[Message], prompt: list[int]) -> tuple[int, ...]:
        """Tokens of everything before the last turn (system + few-shots), if a true prefix."""
        if len(conversation) < 2:
            return ()
        ids = self._tok.apply_chat_template(conversation[:-1], tokenize=True)
        if isinstance(ids, dict) or hasattr(ids, "keys"):
            ids = ids["input_ids"]
        ids = list(ids)
        if len(ids) < self.min_prefix_tokens or len(ids) >= len(prompt) or prompt[: len(ids)] != ids:
            return ()
        return tuple(ids)

    def _prefix_kv(self, prefix: tuple[int, ...]) -> Any:
        """The model's key/value cache for a shared prompt prefix, computed once (LRU of 4)."""
        import torch

        hit = self._kv_cache.get(prefix)
        if hit is not None:
            self._kv_cache.move_to_end(prefix)
            return hit
        from transformers import DynamicCache

        from gsrm.decode import cache_kwarg, output_cache

        with torch.inference_mode():
            out = self._model(
                input_ids=torch.tensor([list(prefix)], device=self.device),
                use_cache=True,
                **{cache_kwarg(self._model): DynamicCache()},
            )
        kv = output_cache(out)
        self._kv_cache[prefix] = kv
        while len(self._kv_cache) > 4:
            self._kv_cache.popitem(last=False)
        return kv

    def _eos_ids(self) -> set[int]:
        eos = self._model.generation_config.eos_token_id
        ids = set(eos if isinstance(eos, list) else [eos])
        ids.add(self._tok.eos_token_id)
        return {i for i in ids if i is not None}

    def _should_stop(self, ids: list[int], trace: str | None = None,
                     stop: Sequence[str] | None = None) -> bool:
        """The loop stop: a looping tail, a repeated step (``repeated_step_start``) or, given
        the trace, a step begun after it was covered (``covered_step_start``); or a stop
        string."""
        decode = self._tok.decode
        if stop and cut_at_stop(decode(ids), stop)[1]:
            return True
        return is_looping(ids[-256:], decode) or stop_cut(decode(ids), trace)[0] is not None

    def _result(self, new: list[int], prompt_tokens: int, limit: int, ended: bool,
                trace: str | None = None, stop: Sequence[str] | None = None) -> Generation:
        """A Generation from completion ids (EOS removed); ``ended``: stopped before the budget."""
        n = len(new)
        text = self._tok.decode(new, skip_special_tokens=True)
        if stop:
            text, hit = cut_at_stop(text, stop)
            if hit:
                return Generation(text=text, prompt_tokens=prompt_tokens, completion_tokens=n)
        looped = self.stop_loops and n < limit and is_looping(new[-256:], self._tok.decode)
        cut, at_end = stop_cut(text, trace) if self.stop_loops else (None, False)
        if cut is not None:  # drop the repeated (or post-trace) step and what follows; flagged
            text, looped = text[:cut].rstrip(), looped or not at_end
        return Generation(
            text=text,
            prompt_tokens=prompt_tokens,
            completion_tokens=n,
            hit_max_new_tokens=(not ended) and n >= limit,
            stopped_in_loop=looped and not at_end,
            stopped_at_trace_end=at_end,
        )

    def generate_decompositions(self, conversations: Sequence[list[Message]],
                                traces: Sequence[str | None]) -> list[Generation]:
        return self._generate(conversations, None, traces)

    def generate(
        self, conversations: Sequence[list[Message]], max_new_tokens: int | None = None,
        stop: Sequence[str] | None = None,
    ) -> list[Generation]:
        return self._generate(conversations, max_new_tokens, [None] * len(conversations), stop)

    def _generate(
        self, conversations: Sequence[list[Message]], max_new_tokens: int | None,
        traces: Sequence[str | None], stop: Sequence[str] | None = None,
    ) -> list[Generation]:
        """Greedy generation, continuously batched (``gsrm.decode.greedy_decode``).

        Why the prefix cache: every decomposition prompt starts with the same system prompt (and
        few-shot examples: ~800 of ~1300 tokens with the default shots), and processing the
        prompt is compute-bound on a CPU. That shared prefix is run through the model once and
        its key/value cache copied into each group of new rows. Rows are grouped by prefix;
        within a group, finished rows leave the batch and waiting ones join (up to
        ``batch_size`` rows decode together). A decomposition that ends before reaching its
        trace's end is resumed in place (``_resume_ids``, ``greedy_decode``'s ``resume``): a
        second pass over the resumed rows cost a second prefill each and decoded them in a
        nearly empty batch. With prompt lookup, transformers' ``generate`` runs one sequence
        at a time instead.
        """
        self.load()
        if self.prompt_lookup:
            return self._generate_lookup(conversations, max_new_tokens, traces, stop)
        limit = max_new_tokens or self.max_new_tokens
        prompts = [self._prompt_ids(c) for c in conversations]
        prefixes = [self._prefix_ids(c, p) if self.prefix_cache else ()
                    for c, p in zip(conversations, prompts)]
        rounds = [0] * len(prompts)  # resumes per row
        anchors = [_AnchorState() for _ in prompts]

        def resume(i: int, ids: list[int]) -> list[int] | None:
            return self._resume_ids(ids, traces[i], limit, rounds, i)

        def revise(i: int, ids: list[int]) -> list[int] | None:
            return self._anchor_ids(ids, traces[i], anchors[i])

        decoded = self._decode_groups(prompts, prefixes, list(traces), limit,
                                      resume if self.stop_loops else None,
                                      revise if self.stop_loops else None, stop)
        done = [d.ids[:limit] for d in decoded]
        ended = [d.reason != "length" for d in decoded]  # stopped before the budget
        out = []
        for i in range(len(prompts)):
            g = self._result(done[i], len(prompts[i]), limit, ended[i], traces[i], stop)
            g.continued = rounds[i]
            g.anchored = len(anchors[i].steps)
            out.append(g)
        return out

    def _decode_groups(self, prompts: list[list[int]], prefixes: list[tuple[int, ...]],
                       traces: list[str | None], budget: int,
                       resume: Callable[[int, list[int]], list[int] | None] | None,
                       revise: Callable[[int, list[int]], list[int] | None] | None = None,
                       stop: Sequence[str] | None = None) -> list[Any]:
        """``greedy_decode`` per shared prefix; ``resume``/``revise(k, ids)`` (k indexes
        ``prompts``)."""
        from gsrm.decode import greedy_decode

        groups: dict[tuple[int, ...], list[int]] = {}
        for k, prefix in enumerate(prefixes):
            groups.setdefault(prefix, []).append(k)
        results: dict[int, Any] = {}
        for prefix, idx in groups.items():
            plen = len(prefix)
            try:
                decoded = greedy_decode(
                    self._model,
                    [prompts[k][plen:] for k in idx],
                    max_new_tokens=budget,
                    eos_ids=self._eos_ids(),
                    pad_id=self._tok.pad_token_id,
                    batch_size=self.batch_size,
                    prefix=prefix,
                    prefix_cache=self._prefix_kv(prefix) if plen else None,
                    should_stop=(lambda j, ids, idx=idx: self._should_stop(
                        ids, traces[idx[j]], stop)) if self.stop_loops or stop else None,
                    resume=(lambda j, ids, idx=idx: resume(idx[j], ids)) if resume else None,
                    revise=(lambda j, ids, idx=idx: revise(idx[j], ids)) if revise else None,
                    device=self.device,
                )
            except Exception as exc:
                raise BackendError(f"generation failed: {exc}") from exc
            for k, d in zip(idx, decoded):
                results[k] = d
        return [results[k] for k in range(len(prompts))]

    def _resume_ids(self, ids: list[int], trace: str | None, limit: int, rounds: list[int],
                    i: int) -> list[int] | None:
        """The completion to go on from when row ``i`` emits EOS, or None to let it end.

        A row is resumed (at most ``CONTINUE_ROUNDS`` times, counted in ``rounds[i]``) when its
        answers never reached the trace's end (``uncovered_resume_point``): its completion is
        rewritten to end in a new ``[Meta-reasoning i]:`` line, and ``greedy_decode`` goes on
        from there in place. Only EOS ends are asked, never a loop stop's.
        """
        if trace is None or rounds[i] >= CONTINUE_ROUNDS or len(ids) >= limit - 16:
            return None
        text = self._tok.decode(ids, skip_special_tokens=True)
        if stop_cut(text, trace)[0] is not None:
            return None
        at = uncovered_resume_point(text, trace)
        if at is None:
            return None
        n_steps = len([m for m in _STEP_LINE.finditer(text[:at]) if m.group(1) == "Answer"])
        head = text[:at].rstrip() + f"\n[Meta-reasoning {n_steps + 1}]:"
        rounds[i] += 1
        return list(self._tok.encode(head, add_special_tokens=False))

    def _anchor_ids(self, ids: list[int], trace: str | None, state: _AnchorState
                    ) -> list[int] | None:
        """The completion to go on from when a running row's last answer lost its place.

        Asked every few tokens (``greedy_decode``'s ``revise``); the trace is only examined
        when a new line has been completed. A skip (``gsrm.anchor.find_skip``) is
        repaired at most once per step and ``MAX_ANCHORS`` times per row: the completion is
        cut back to the answer's header plus the skipped sentence's opening words.
        """
        if trace is None or len(state.steps) >= MAX_ANCHORS:
            return None
        text = self._tok.decode(ids, skip_special_tokens=True)
        complete = text.count("\n")  # lines ended so far
        if complete == state.seen:
            return None
        state.seen = complete
        skip = find_skip(text, trace)
        if skip is None or skip.step in state.steps:
            return None
        state.steps.add(skip.step)
        state.seen = -1
        head = text[: skip.body_start] + skip.opening
        return list(self._tok.encode(head, add_special_tokens=False))

    def _generate_lookup(
        self, conversations: Sequence[list[Message]], max_new_tokens: int | None,
        traces: Sequence[str | None], stop: Sequence[str] | None = None,
    ) -> list[Generation]:
        """Prompt-lookup speculation through ``model.generate``, one sequence at a time.

        The loop and trace stops apply; the in-place resume and re-anchoring do not (they
        rewrite a running row, which ``generate`` cannot), and the cache identity says so.
        """
        import torch

        limit = max_new_tokens or self.max_new_tokens
        eos_ids = self._eos_ids()
        pad = self._tok.pad_token_id
        results: list[Generation] = []
        for conversation, trace in zip(conversations, traces):
            prompt = self._prompt_ids(conversation)
            kwargs: dict[str, Any] = {
                "max_new_tokens": limit, "do_sample": False, "pad_token_id": pad,
                "temperature": None, "top_p": None, "top_k": None,
                "prompt_lookup_num_tokens": self.prompt_lookup,
            }
            if self.stop_loops or stop:
                from transformers import StoppingCriteriaList

                kwargs["stopping_criteria"] = StoppingCriteriaList(
                    [_loop_stopper(len(prompt),
                                   lambda ids, trace=trace: self._should_stop(ids, trace, stop))]
                )
            try:
                with torch.inference_mode():
                    out = self._model.generate(
                        input_ids=torch.tensor([prompt], device=self.device),
                        attention_mask=torch.ones((1, len(prompt)), dtype=torch.long,
                                                  device=self.device),
                        **kwargs,
                    )
            except Exception as exc:
                raise BackendError(f"generation failed: {exc}") from exc
            new = out[0, len(prompt):].tolist()
            n = next((j for j, t in enumerate(new) if t in eos_ids), len(new))
            results.append(self._result(new[:n], len(prompt), limit, n < len(new), trace, stop))
        return results


# --------------------------------------------------------------------------- openai
class OpenAIBackend(Backend):
    """A remote OpenAI-compatible chat server (vLLM, SGLang, llama.cpp), greedy, concurrent.

    Token counts come from the server's ``usage``; input truncation estimates 4 characters a
    token (the server's tokenizer is not available here) and is flagged when applied.
    """

    name = "openai"
    describes_spans = True

    def __init__(
        self,
        base_url: str | None = None,
        model: str | None = None,
        api_key: str | None = None,
        timeout: float = 120.0,
        max_retries: int = 3,
        concurrency: int = 16,
        client: Any = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if client is None and not base_url:
            raise ValueError("the openai backend needs base_url (e.g. http://127.0.0.1:8000/v1)")
        self.base_url = base_url
        self.model = model or "default"
        self.api_key = api_key or "EMPTY"
        self.timeout = timeout
        self.max_retries = max_retries
        self.concurrency = concurrency
        self._client = client

    @property
    def model_id(self) -> str:
        return f"{self.base_url}#{self.model}"

    def _get_client(self) -> Any:
        if self._client is None:
            from openai import OpenAI

            self._client = OpenAI(base_url=self.base_url, api_key=self.api_key,
                                  timeout=self.timeout, max_retries=self.max_retries)
        return self._client

    def _one(self, conversation: list[Message], limit: int,
             stop: Sequence[str] | None = None) -> Generation:
        extra: dict[str, Any] = {"stop": list(stop)[:4]} if stop else {}
        try:
            resp = self._get_client().chat.completions.create(
                model=self.model, messages=conversation, temperature=0.0, max_tokens=limit,
                **extra,
            )
        except Exception as exc:
            raise BackendError(f"openai backend request to {self.base_url} failed: {exc}") from exc
        if not resp.choices:
            raise BackendError("openai backend: the server returned no choices")
        choice = resp.choices[0]
        usage = resp.usage
        return Generation(
            text=cut_at_stop(choice.message.content or "", stop or ())[0],
            prompt_tokens=getattr(usage, "prompt_tokens", 0) or 0,
            completion_tokens=getattr(usage, "completion_tokens", 0) or 0,
            hit_max_new_tokens=choice.finish_reason == "length",
        )

    def generate(
        self, conversations: Sequence[list[Message]], max_new_tokens: int | None = None,
        stop: Sequence[str] | None = None,
    ) -> list[Generation]:
        limit = max_new_tokens or self.max_new_tokens
        if not conversations:
            return []
        workers = max(1, min(self.concurrency, len(conversations)))
        with ThreadPoolExecutor(max_workers=workers) as pool:
            return list(pool.map(lambda c: self._one(c, limit, stop), conversations))


# --------------------------------------------------------------------------- vllm
class VLLMBackend(Backend):
    """In-process vLLM (GPU), an optional extra: ``pip install 'gsrm[vllm]'``."""

    name = "vllm"
    describes_spans = True

    def __init__(self, model: str | None = None, adapter: str | None = "auto",
                 gpu_memory_utilization: float = 0.85, **kwargs: Any) -> None:
        from gsrm.weights import resolve_adapter

        resolved = resolve_adapter(adapter, model)
        if kwargs.get("shots") is None:
            kwargs["shots"] = () if resolved else DEFAULT_SHOTS
        super().__init__(**kwargs)
        self.model_path = model
        self.adapter = resolved
        self.gpu_memory_utilization = gpu_memory_utilization
        self._llm: Any = None
        self._tok: Any = None

    @property
    def model_id(self) -> str:
        base = self.model_path or "smollm2-135m-instruct (embedded)"
        return f"{base}+{self.adapter}" if self.adapter else base

    def _load(self) -> Any:
        if self._llm is None:
            try:
                from vllm import LLM
            except ImportError as exc:
                raise BackendError("the vllm backend needs: pip install 'gsrm[vllm]'") from exc
            from gsrm.weights import default_model_dir

            path = self.model_path or str(default_model_dir())
            self._llm = LLM(model=path, enable_lora=bool(self.adapter),
                            max_model_len=self.max_input_tokens + self.max_new_tokens,
                            gpu_memory_utilization=self.gpu_memory_utilization)
            self._tok = self._llm.get_tokenizer()
        return self._llm

    def count_tokens(self, text: str) -> int:
        self._load()
        return len(self._tok(text, add_special_tokens=False)["input_ids"])

    def truncate(self, text: str, max_tokens: int) -> str:
        self._load()
        return self._tok.decode(self._tok(text, add_special_tokens=False)["input_ids"][:max_tokens])

    def generate(
        self, conversations: Sequence[list[Message]], max_new_tokens: int | None = None,
        stop: Sequence[str] | None = None,
    ) -> list[Generation]:
        from vllm import SamplingParams

        llm = self._load()
        limit = max_new_tokens or self.max_new_tokens
        params = SamplingParams(temperature=0.0, max_tokens=limit, stop=list(stop or []) or None)
        lora = None
        if self.adapter:
            from vllm.lora.request import LoRARequest

            lora = LoRARequest("gsrm", 1, self.adapter)
        outs = llm.chat(list(conversations), params, lora_request=lora, use_tqdm=False)
        return [
            Generation(
                text=cut_at_stop(o.outputs[0].text, stop or ())[0],
                prompt_tokens=len(o.prompt_token_ids or []),
                completion_tokens=len(o.outputs[0].token_ids),
                hit_max_new_tokens=o.outputs[0].finish_reason == "length",
            )
            for o in outs
        ]


# --------------------------------------------------------------------------- registry
BACKENDS: dict[str, Callable[..., Backend]] = {
    "transformers": TransformersBackend,
    "openai": OpenAIBackend,
    "vllm": VLLMBackend,
    "sentences": SentenceBackend,
}
DEFAULT_BACKEND = "transformers"


def get_backend(name: str = DEFAULT_BACKEND, **kwargs: Any) -> Backend:
    """Build a backend by registry name; unknown keyword arguments raise TypeError."""
    try:
        factory = BACKENDS[name]
    except KeyError:
        raise ValueError(f"unknown backend {name!r}; choose one of {sorted(BACKENDS)}") from None
    return factory(**kwargs)
