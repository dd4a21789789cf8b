"""Same model, same text, same decomposition: the transformers backend and the openai backend.

Why: a reward must not depend on how the LM is reached. A user who serves the GSRM's model
behind an OpenAI-compatible server (vLLM, llama.cpp) and points ``--backend openai`` at it must
get the decomposition the in-process transformers backend gives. Any decoding rule that lives
in one backend only (a stop, a resume, a cut) breaks that.

The server here is a small OpenAI-compatible chat stub on loopback that answers with the same
model's greedy output (the transformers backend's ``generate``, one conversation per request,
honouring ``max_tokens`` and ``stop``); the client is the real ``openai`` SDK inside the openai
backend. Slow: it loads the embedded model.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest

from tests.openai_stub import Reply, chat_response, openai_stub

pytestmark = pytest.mark.slow

PROBLEM = ("Natalia sold clips to 48 of her friends in April, and then she sold half as many "
           "clips in May. How many clips did Natalia sell altogether in April and May?")
REASONING = ("First I need the May sales. Natalia sold 48/2 = 24 clips in May. "
             "Wait, let me check that: half of 48 is 24, yes. "
             "Now I add the two months. Altogether she sold 48+24 = 72 clips in April and May.")


def served_by(backend: Any) -> Reply:
    """A chat-completions reply that answers with ``backend.generate`` (greedy, one at a time)."""
    lock = threading.Lock()  # the stub serves requests on threads; the model is not thread-safe

    def reply(body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        stop = body.get("stop")
        stop = [stop] if isinstance(stop, str) else stop
        with lock:
            gen = backend.generate([body["messages"]], body.get("max_tokens"), stop=stop)[0]
        return 200, chat_response(gen.text, "length" if gen.hit_max_new_tokens else "stop",
                                  prompt_tokens=gen.prompt_tokens,
                                  completion_tokens=gen.completion_tokens)

    return reply


@pytest.fixture(scope="module", params=[
    ("two-stage", "auto"),  # the default describer (``qa``): ``--span-format auto``
    ("two-stage", "describer-pqa-brief"),  # span format ``pqa``: said to the openai backend
    ("two-stage", "describer"),  # span format ``tags``
    ("single-pass", "auto"),  # cpu-small, trained to write whole decompositions
])
def backends(request: pytest.FixtureRequest) -> Iterator[tuple[str, Any, Any]]:
    """(decomposer, local, remote): a decomposer with a shipped adapter
    (``gsrm.weights.adapter_for``: auto is the one trained for that decomposer)."""
    from gsrm.backends import get_backend
    from gsrm.weights import adapter_for

    decomposer, adapter = request.param
    local = get_backend("transformers", threads=2, max_new_tokens=256,
                        adapter=adapter_for(adapter, decomposer))
    with openai_stub(served_by(local)) as (url, _):
        # the adapter's prompts carry no shots and its span format is said, not read: a
        # served fine-tuned model is prompted the same
        # (the default describer's format as ``auto``, the value that names it)
        said = "auto" if (decomposer, adapter) == ("two-stage", "auto") else local.span_format
        remote = get_backend("openai", base_url=url, model="gsrm", max_new_tokens=256,
                             shots=local.shots, span_format=said)
        yield decomposer, local, remote


def test_transformers_and_openai_give_the_same_decomposition(
        backends: tuple[str, Any, Any]) -> None:
    from gsrm.model import GSRM

    decomposer, local, remote = backends
    structs = [GSRM(backend=b, judge=None, decomposer=decomposer, cache_size=0)
               .decompose(PROBLEM, REASONING) for b in (local, remote)]
    as_rows = [[(s.meta, s.subproblem, s.answer, s.span) for s in st.steps]
               for st in structs]
    assert as_rows[0], "the local backend gave no steps"
    assert remote.span_format == local.span_format  # the adapter's format went over the wire
    assert as_rows[0] == as_rows[1]
    assert structs[0].warnings == structs[1].warnings
