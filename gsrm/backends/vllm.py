"""``vllm``: in-process vLLM on a GPU, an optional extra (``pip install 'gsrm[vllm]'``).

vLLM applies the stop strings; the safeguards (``Backend.finished``) are applied to its text
afterwards, as in every backend.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from gsrm.backends.base import BackendError, LocalModelBackend, continues_reply
from gsrm.prompts import Message
from gsrm.structure import Generation


class VLLMBackend(LocalModelBackend):
    """A vLLM ``LLM`` with an optional LoRA adapter, greedy."""

    name = "vllm"

    def __init__(self, model: str | None = None, adapter: str | None = "auto",
                 gpu_memory_utilization: float = 0.85, **kwargs: Any) -> None:
        super().__init__(model=model, adapter=adapter, **kwargs)
        self.gpu_memory_utilization = gpu_memory_utilization
        self._llm: Any = None

    def load(self) -> None:
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

    def generate(
        self, conversations: Sequence[list[Message]], max_new_tokens: int | None = None,
        stop: Sequence[str] | None = None,
    ) -> list[Generation]:
        from vllm import SamplingParams

        self.load()
        llm = self._llm
        limit = max_new_tokens or self.max_new_tokens
        params = SamplingParams(temperature=0.0, max_tokens=limit, stop=list(stop or []) or None)
        lora = None
        if self.adapter:
            from vllm.lora.request import LoRARequest

            lora = LoRARequest("gsrm", 1, self.adapter)
        results: dict[int, Generation] = {}
        for cont in (False, True):  # vLLM takes the prefill switch per call, not per chat
            idx = [k for k, c in enumerate(conversations) if continues_reply(c) == cont]
            if not idx:
                continue
            outs = llm.chat([conversations[k] for k in idx], params, lora_request=lora,
                            use_tqdm=False, add_generation_prompt=not cont,
                            continue_final_message=cont)
            for k, o in zip(idx, outs, strict=True):
                results[k] = self.finished(
                    o.outputs[0].text, len(o.prompt_token_ids or []),
                    len(o.outputs[0].token_ids), o.outputs[0].finish_reason == "length", stop)
        return [results[k] for k in range(len(conversations))]
