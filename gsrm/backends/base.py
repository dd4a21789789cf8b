"""The interface every backend implements: chat generation in batches, decomposition on top.

Why a base class with ``decompose_many`` built on ``generate``: a backend is an LM transport
(a local model, a remote server, an in-process engine) and nothing more; the prompt, the input
truncation and the generic safeguards (``gsrm.backends.safeguards``) are the same for all of
them, so the same model gives the same decomposition, hence the same reward, through any
backend.
"""

from __future__ import annotations

import hashlib
import json
from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from gsrm.backends.safeguards import REPEAT_RULE, apply_safeguards
from gsrm.prompts import DEFAULT_SHOTS, Message, build_messages
from gsrm.structure import Generation

DecomposeItem = tuple[str, str]  # (problem, reasoning)


def continues_reply(conversation: Sequence[Message]) -> bool:
    """True when the conversation ends with an assistant turn: a prefill the model continues
    (its completion is the continuation only), as the describer's format repair sends
    (``gsrm.describe``).

    >>> continues_reply([{"role": "user", "content": "q"}, {"role": "assistant", "content": "[A"}])
    True
    """
    return bool(conversation) and conversation[-1].get("role") == "assistant"


class BackendError(RuntimeError):
    """A backend could not generate (model failed to load, server unreachable, ...)."""


class Backend(ABC):
    """Generates text for chat conversations; subclasses implement ``generate``.

    ``stop_repeats`` (on by default, in every backend) ends a generation at a step that
    repeats an earlier step word for word (``gsrm.parse.repeated_step_start``) or at a loop
    inside a line (``gsrm.backends.safeguards.line_loop_end``); with the token budget
    ``max_new_tokens`` these are the only safeguards, and all are in ``identity()``.
    """

    name: str = "backend"
    #: True for model-free decomposers that make their own steps (and spans); the GSRM then
    #: uses their decomposition as it is instead of segmenting and describing
    rule_based: bool = False
    #: True for LM backends that the two-stage GSRM asks to describe step spans (``generate``
    #: with ``stop``); other backends decompose whole traces (``decompose_many``)
    describes_spans: bool = False
    #: True for backends that load a LoRA adapter themselves (``adapter=``); the GSRM then
    #: picks the one trained for its decomposer (``gsrm.weights.adapter_for``)
    takes_adapter: bool = False
    #: True: the describer prefills each problem's prompt once before its batch
    #: (``gsrm.describe.warm_prefixes``), for engines whose prefix cache reuses prompt blocks
    #: only once an earlier step has computed them: on in the OpenVINO backend (its
    #: ``prefix_warmup=``), off here (the torch path shares a batch's prefix itself)
    prefix_warmup: bool = False
    #: the describer format the model was trained on (``gsrm.spanformat``; an adapter says
    #: which in its ``run.json``); ``tags`` for a base model with few-shot examples
    span_format: str = "tags"

    def __init__(
        self,
        max_new_tokens: int = 1024,
        max_input_tokens: int = 6144,
        shots: Sequence[str] | int | None = None,
        stop_repeats: bool = True,
    ) -> None:
        self.max_new_tokens = max_new_tokens
        self.max_input_tokens = max_input_tokens
        if shots is None:  # a fine-tuned adapter is prompted with none (TransformersBackend)
            shots = DEFAULT_SHOTS
        self.shots = shots if isinstance(shots, int) else tuple(shots)
        self.stop_repeats = stop_repeats

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
            "stop_repeats": REPEAT_RULE if self.stop_repeats else False,
            # unchanged keys for the format that predates the key
            **({"span_format": self.span_format} if self.span_format != "tags" else {}),
        }

    def cache_key(self) -> str:
        blob = json.dumps(self.identity(), sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    # -- chat generation ---------------------------------------------------------------
    @abstractmethod
    def generate(
        self, conversations: Sequence[list[Message]], max_new_tokens: int | None = None,
        stop: Sequence[str] | None = None,
    ) -> list[Generation]:
        """Greedy chat completions for a batch of conversations, in order.

        A conversation that ends with an assistant turn is continued from that turn's text
        (``continues_reply``); the completion is the continuation only.

        ``stop``: strings that end a completion (the text is cut before the first of them).
        Every LM backend returns ``finished(...)``, so the stop strings and the safeguards
        act the same in all of them.
        """

    def reset(self) -> bool:
        """Drop any engine state that outlives a ``generate`` call (a prefix cache), so the
        next call starts as on a fresh load; True when there was such state to drop. Nothing
        here: a backend without such state is its own fresh engine. ``gsrm.describe`` calls
        it before describing again spans whose completions had no step
        (``RESET_AFTER_NO_STEP``)."""
        return False

    def finished(self, text: str, prompt_tokens: int, completion_tokens: int,
                 at_budget: bool, stop: Sequence[str] | None = None) -> Generation:
        """A Generation from a raw completion, with the safeguards applied (``apply_safeguards``).

        ``at_budget``: the completion ran to ``max_new_tokens``; it is reported only when
        nothing cut the text earlier (a stop string or a repeated step ends it before the
        budget did).
        """
        text, stopped, repeated = apply_safeguards(text, stop, self.stop_repeats)
        return Generation(
            text=text, backend=self.name, model=self.model_id, prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            hit_max_new_tokens=at_budget and not (stopped or repeated),
            stopped_in_loop=repeated,
        )

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
        """Whole-trace decompositions of (problem, reasoning) items, in input order (the
        single-pass GSRM): one chat generation per item, input truncation flagged."""
        fitted = [self.fit(p, r) for p, r in items]
        gens = self.generate([m for m, _ in fitted])
        for g, (_, truncated) in zip(gens, fitted, strict=True):
            g.input_truncated = g.input_truncated or truncated
        return gens


class LocalModelBackend(Backend):
    """A backend that loads a model itself: a base model plus an optional LoRA adapter, and
    its Hugging Face tokenizer (``transformers``, ``vllm``, ``openvino``).

    Why one class: these backends resolve ``adapter`` the same way
    (``gsrm.weights.resolve_adapter``; no few-shot examples with an adapter, it was trained
    zero-shot), name the model the same way, and count, cut and chat-template text with the
    same tokenizer calls, so the prompt and the input truncation cannot drift between them.
    Subclasses implement ``load`` (idempotent; sets ``self._tok``) and ``generate``.
    """

    takes_adapter = True
    describes_spans = True

    def __init__(self, model: str | None = None, adapter: str | None = "auto",
                 **kwargs: Any) -> None:
        from gsrm.spanformat import span_format_of
        from gsrm.weights import resolve_adapter

        resolved = resolve_adapter(adapter, model)
        if kwargs.get("shots") is None:
            kwargs["shots"] = () if resolved else DEFAULT_SHOTS
        super().__init__(**kwargs)
        self.model_path = model
        self.adapter = resolved
        self.span_format = span_format_of(resolved)
        self._tok: Any = None

    @property
    def model_id(self) -> str:
        base = self.model_path or "smollm2-135m-instruct (embedded)"
        return f"{base}+{self.adapter}" if self.adapter else base

    def identity(self) -> dict[str, Any]:
        """The base identity, plus the adapter weights' mtime: an adapter retrained in place
        keeps its path (``model_id``) but must not be served from the old decompositions."""
        ident = super().identity()
        if self.adapter:
            st = Path(self.adapter) / "adapter_model.safetensors"
            ident["adapter_mtime"] = st.stat().st_mtime if st.exists() else None
        return ident

    @abstractmethod
    def load(self) -> None:
        """Load the model and ``self._tok`` once; raise BackendError with the cause."""

    def count_tokens(self, text: str) -> int:
        self.load()
        return len(self._tok(text, add_special_tokens=False)["input_ids"])

    def truncate(self, text: str, max_tokens: int) -> str:
        self.load()
        ids = self._tok(text, add_special_tokens=False)["input_ids"][: max(0, max_tokens)]
        return self._tok.decode(ids)

    def _prompt_ids(self, conversation: list[Message]) -> list[int]:
        """The chat-templated prompt's token ids: the generation prompt, or, when the
        conversation ends with an assistant turn (``continues_reply``), that turn left open so
        the model continues it."""
        cont = continues_reply(conversation)
        ids = self._tok.apply_chat_template(conversation, add_generation_prompt=not cont,
                                            continue_final_message=cont, tokenize=True)
        if isinstance(ids, dict) or hasattr(ids, "keys"):
            ids = ids["input_ids"]
        return list(ids)
