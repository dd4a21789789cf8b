"""``transformers``: a local HF causal LM (default: the embedded SmolLM2-135M-Instruct).

Why a custom decoding loop (``gsrm.decode.greedy_decode``) instead of ``model.generate``:
describing step spans and decomposing traces are many independent greedy generations of
different lengths; continuous batching keeps the batch full of rows that still produce
tokens, and the shared system/few-shot prefix is run through the model once. torch and
transformers are imported only when the model loads.
"""

from __future__ import annotations

import functools
import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any

from gsrm.backends.base import BackendError, LocalModelBackend, continues_reply
from gsrm.backends.safeguards import should_stop
from gsrm.prompts import Message
from gsrm.structure import Generation

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

    Why: on a CPU with AVX512-BF16/AMX (and on a CUDA GPU with bf16) bfloat16 decodes much
    faster than float32; on a CPU without native bf16 support it is emulated and slower.
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


def _stopping_criteria(prompt_len: int, stop_now: Callable[[list[int]], bool],
                       min_new: int = 48, every: int = 4) -> Any:
    """A transformers StoppingCriteria asking ``stop_now`` every few tokens.

    Used by ``model.generate`` (prompt lookup); plain greedy decoding asks the same callable
    from ``gsrm.decode.greedy_decode`` with the same ``min_new``/``every``, so both stop at
    the same token.
    """
    import torch
    from transformers import StoppingCriteria

    class SafeguardStop(StoppingCriteria):
        def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
            done = torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
            n_new = input_ids.shape[1] - prompt_len
            if n_new < min_new or n_new % every:
                return done
            for row, ids in enumerate(input_ids[:, prompt_len:].tolist()):
                done[row] = stop_now(ids)
            return done

    return SafeguardStop()


class TransformersBackend(LocalModelBackend):
    """A local HF causal LM, batched greedy decoding.

    ``model`` is a local folder or hub id (None: the embedded default, converted once to the
    cache, see ``gsrm.weights``); ``adapter`` a peft LoRA folder merged at load time, where
    ``"auto"`` (the default) means the fine-tuned adapter shipped in the package when the base
    model is the embedded one (``gsrm.weights.resolve_adapter``). ``shots`` left unset means
    none with an adapter (it was trained zero-shot) and ``DEFAULT_SHOTS`` without.
    ``prompt_lookup`` > 0 enables prompt-lookup (n-gram copy) speculation, which gives the
    same greedy output; transformers runs it one sequence at a time (``benchmarks/decode.py``
    measures whether it pays). ``prefix_cache`` reuses the shared system/few-shot prefix's
    key/value cache across calls (see ``generate``); it is not combined with prompt lookup,
    because lookup on a pre-filled cache did not reproduce plain greedy.
    The stop strings and the repeated-step safeguard (``Backend.finished``) are also checked
    while decoding, so a row ends as soon as its kept text is final.
    """

    name = "transformers"

    def __init__(
        self,
        model: str | None = None,
        adapter: str | None = "auto",
        device: str | None = None,
        dtype: str = "float32",
        batch_size: int = 8,
        prompt_lookup: int = 0,
        threads: int | None = None,
        prefix_cache: bool = True,
        min_prefix_tokens: int = 64,
        **kwargs: Any,
    ) -> None:
        super().__init__(model=model, adapter=adapter, **kwargs)
        self.prefix_cache = prefix_cache
        self.min_prefix_tokens = min_prefix_tokens
        self._kv_cache: OrderedDict[tuple[int, ...], Any] = OrderedDict()
        self.device = device or default_device()
        self.dtype = dtype
        self.batch_size = batch_size
        self.prompt_lookup = prompt_lookup
        self.threads = threads
        self._model: Any = None
        self._lock = threading.Lock()

    def identity(self) -> dict[str, Any]:
        ident = super().identity()
        if self.prompt_lookup:
            ident["prompt_lookup"] = self.prompt_lookup
        ident["dtype"] = resolve_dtype(self.dtype, self.device)
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

    def _prefix_ids(self, conversation: list[Message], prompt: list[int]) -> tuple[int, ...]:
        """Tokens of everything before the last user turn (system + few-shots), if a true
        prefix (a prefilled reply after it is not shared, so it is not part of it)."""
        head = conversation[:-2] if continues_reply(conversation) else conversation[:-1]
        if not head:
            return ()
        ids = self._tok.apply_chat_template(head, tokenize=True)
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

    def _stop_check(self, stop: Sequence[str] | None) -> Callable[[list[int]], bool] | None:
        """The early-stop test on completion ids (``safeguards.should_stop``), or None."""
        if not stop and not self.stop_repeats:
            return None
        return lambda ids: should_stop(self._tok.decode(ids), stop, self.stop_repeats)

    def _result(self, new: list[int], prompt_tokens: int, limit: int, ended: bool,
                stop: Sequence[str] | None = None) -> Generation:
        """A Generation from completion ids (EOS removed); ``ended``: stopped before the budget."""
        text = self._tok.decode(new, skip_special_tokens=True)
        return self.finished(text, prompt_tokens, len(new), (not ended) and len(new) >= limit,
                             stop)

    def generate(
        self, conversations: Sequence[list[Message]], max_new_tokens: int | None = None,
        stop: Sequence[str] | None = None,
    ) -> list[Generation]:
        """Greedy generation, continuously batched (``gsrm.decode.greedy_decode``).

        Why the prefix cache: every prompt starts with the same system prompt (and few-shot
        examples, when used), and processing the prompt is compute-bound on a CPU. That shared
        prefix is run through the model once and its key/value cache copied into each group
        of new rows. Rows are grouped by prefix; within a group, finished rows leave the batch
        and waiting ones join (up to ``batch_size`` rows decode together). With prompt lookup,
        transformers' ``generate`` runs one sequence at a time instead.
        """
        self.load()
        if self.prompt_lookup:
            return self._generate_lookup(conversations, max_new_tokens, stop)
        from gsrm.decode import greedy_decode

        limit = max_new_tokens or self.max_new_tokens
        prompts = [self._prompt_ids(c) for c in conversations]
        prefixes = [self._prefix_ids(c, p) if self.prefix_cache else ()
                    for c, p in zip(conversations, prompts)]
        check = self._stop_check(stop)
        groups: dict[tuple[int, ...], list[int]] = {}
        for k, prefix in enumerate(prefixes):
            groups.setdefault(prefix, []).append(k)
        decoded: dict[int, Any] = {}
        for prefix, idx in groups.items():
            plen = len(prefix)
            try:
                out = greedy_decode(
                    self._model,
                    [prompts[k][plen:] for k in idx],
                    max_new_tokens=limit,
                    eos_ids=self._eos_ids(),
                    pad_id=self._tok.pad_token_id,
                    batch_size=self.batch_size,
                    prefix=prefix,
                    prefix_cache=self._prefix_kv(prefix) if plen else None,
                    should_stop=(lambda j, ids: check(ids)) if check else None,
                    device=self.device,
                )
            except Exception as exc:
                raise BackendError(f"generation failed: {exc}") from exc
            decoded.update(zip(idx, out))
        results = []
        for k, prompt in enumerate(prompts):
            d = decoded[k]
            ids = d.ids[:limit]
            results.append(self._result(ids, len(prompt), limit, d.reason != "length", stop))
        return results

    def _generate_lookup(
        self, conversations: Sequence[list[Message]], max_new_tokens: int | None,
        stop: Sequence[str] | None = None,
    ) -> list[Generation]:
        """Prompt-lookup speculation through ``model.generate``, one sequence at a time."""
        import torch

        limit = max_new_tokens or self.max_new_tokens
        eos_ids = self._eos_ids()
        pad = self._tok.pad_token_id
        check = self._stop_check(stop)
        results: list[Generation] = []
        for conversation in conversations:
            prompt = self._prompt_ids(conversation)
            kwargs: dict[str, Any] = {
                "max_new_tokens": limit, "do_sample": False, "pad_token_id": pad,
                "temperature": None, "top_p": None, "top_k": None,
                "prompt_lookup_num_tokens": self.prompt_lookup,
            }
            if check is not None:
                from transformers import StoppingCriteriaList

                kwargs["stopping_criteria"] = StoppingCriteriaList(
                    [_stopping_criteria(len(prompt), check)])
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
            results.append(self._result(new[:n], len(prompt), limit, n < len(new), stop))
        return results
