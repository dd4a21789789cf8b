"""LM transports behind one small interface, chosen by name.

Why a registry: the same GSRM runs as a 135M model on a laptop CPU (``openvino``, the
default there: OpenVINO GenAI on a GGUF export made once, ``gsrm.openvino_export``), in
torch on a GPU or CPU (``transformers``, the default when a torch accelerator device is
asked for), against a GPU server someone else runs (``openai``: vLLM, SGLang, llama.cpp), or
in-process on a GPU (``vllm``). ``sentences`` is a model-free baseline (one step per
sentence) that keeps fast tests and smoke runs free of model weights.

A backend generates chat completions in batches (``Backend.generate``) and reports, per
completion, the text and the facts needed to trust it (``Generation``: token counts, input
truncated to ``max_input_tokens``, output stopped at ``max_new_tokens``, a repeated step
dropped); truncation is flagged, never silent. The only safeguards on generated text are
generic and shared by every backend (``gsrm.backends.safeguards``).

Modules: ``base`` (the interface), ``safeguards``, ``transformers``, ``openai``, ``vllm``,
``openvino``, ``sentences``; none imports torch, transformers, OpenVINO or an HTTP client
until a model or client is built.

Example::

    >>> from gsrm.backends import get_backend
    >>> b = get_backend("sentences")
    >>> g = b.decompose_many([("What is 2+3?", "First add 2 and 3. So the sum is 5.")])[0]
    >>> g.text.splitlines()[0]
    '[Meta-reasoning 1]: First add 2 and 3.'
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from gsrm.backends.base import Backend, BackendError, DecomposeItem
from gsrm.backends.openai import OpenAIBackend
from gsrm.backends.openvino import OpenVINOBackend
from gsrm.backends.sentences import SentenceBackend
from gsrm.backends.transformers import TransformersBackend
from gsrm.backends.vllm import VLLMBackend
from gsrm.structure import Generation

__all__ = [
    "ACCELERATOR_BACKEND",
    "BACKENDS",
    "DEFAULT_BACKEND",
    "Backend",
    "BackendError",
    "DecomposeItem",
    "Generation",
    "OpenAIBackend",
    "OpenVINOBackend",
    "SentenceBackend",
    "TransformersBackend",
    "VLLMBackend",
    "default_backend",
    "get_backend",
]

BACKENDS: dict[str, Callable[..., Backend]] = {
    "transformers": TransformersBackend,
    "openai": OpenAIBackend,
    "vllm": VLLMBackend,
    "openvino": OpenVINOBackend,
    "sentences": SentenceBackend,
}
DEFAULT_BACKEND = "openvino"
"""The CPU default: the fastest engine there whose decompositions score as the transformers
backend's do (README, "Speed and memory")."""
ACCELERATOR_BACKEND = "transformers"
"""The default when a torch device other than the CPU is asked for (OpenVINO runs on the CPU)."""


def default_backend(device: str | None = None) -> str:
    """The backend used when none is named: ``openvino`` on the CPU, ``transformers`` when
    ``device`` (else ``$GSRM_DEVICE``) names another torch device.

    >>> default_backend("cpu"), default_backend("cuda:0")
    ('openvino', 'transformers')
    """
    from gsrm.backends.transformers import default_device

    chosen = (device or default_device()).strip().lower()
    return DEFAULT_BACKEND if chosen == "cpu" else ACCELERATOR_BACKEND


def get_backend(name: str | None = None, **kwargs: Any) -> Backend:
    """Build a backend by registry name (None: ``default_backend(device)``); unknown keyword
    arguments raise TypeError."""
    if name is None:
        name = default_backend(kwargs.get("device"))
    try:
        factory = BACKENDS[name]
    except KeyError:
        raise ValueError(f"unknown backend {name!r}; choose one of {sorted(BACKENDS)}") from None
    return factory(**kwargs)
