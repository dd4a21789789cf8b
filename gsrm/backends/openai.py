"""``openai``: a remote OpenAI-compatible chat server (vLLM, SGLang, llama.cpp), greedy.

Why: a large GSRM (the paper's 7B) runs on a GPU server someone else operates. The server
applies the stop strings; the safeguards (``Backend.finished``) are applied here to the
returned text, so the kept text is what the local backends keep for the same completion.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from gsrm.backends.base import Backend, BackendError, continues_reply
from gsrm.prompts import Message
from gsrm.structure import Generation

MAX_STOP_STRINGS = 4
"""The OpenAI API accepts at most four stop strings; any further ones are applied locally."""


def chat_request(model: str, conversation: list[Message], max_tokens: int,
                 stop: Sequence[str] | None = None) -> dict[str, Any]:
    """The keyword arguments of one greedy ``chat.completions.create`` call.

    >>> chat_request("m", [{"role": "user", "content": "hi"}], 8, ["\\n[A"])["stop"]
    ['\\n[A']
    """
    body: dict[str, Any] = {"model": model, "messages": conversation, "temperature": 0.0,
                            "max_tokens": max_tokens}
    if stop:
        body["stop"] = list(stop)[:MAX_STOP_STRINGS]
    if continues_reply(conversation):  # vLLM's chat API: continue that turn
        body["extra_body"] = {"continue_final_message": True, "add_generation_prompt": False}
    return body


class OpenAIBackend(Backend):
    """Concurrent greedy requests to an OpenAI-compatible server.

    Token counts come from the server's ``usage``; input truncation estimates 4 characters a
    token (the server's tokenizer is not available here) and is flagged when applied.
    ``span_format`` is the describer format the served model was trained on (``gsrm.spanformat``):
    the server's weights cannot be read from here, so it is said, not found, and a describer
    served with its adapter merged is prompted and parsed as the local backends do with that
    adapter. Default ``tags``, the canonical format, as the default few-shot prompt (``shots``)
    is: what a general or paper-format model behind the server is prompted with; ``auto`` is
    the shipped default describer's (``qa``, ``gsrm.spanformat.default_span_format``), for that
    describer merged and served (with ``shots=0``, as it was trained without shots).
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
        span_format: str = "tags",
        **kwargs: Any,
    ) -> None:
        from gsrm.spanformat import resolve_span_format

        super().__init__(**kwargs)
        try:
            self.span_format = resolve_span_format(span_format)
        except KeyError as exc:
            raise ValueError(exc.args[0]) from None
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
        try:
            resp = self._get_client().chat.completions.create(
                **chat_request(self.model, conversation, limit, stop))
        except Exception as exc:
            raise BackendError(f"openai backend request to {self.base_url} failed: {exc}") from exc
        if not resp.choices:
            raise BackendError("openai backend: the server returned no choices")
        choice = resp.choices[0]
        usage = resp.usage
        return self.finished(
            choice.message.content or "",
            getattr(usage, "prompt_tokens", 0) or 0,
            getattr(usage, "completion_tokens", 0) or 0,
            choice.finish_reason == "length",
            stop,
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
