"""The generic safeguards (``gsrm.backends.safeguards``): the exact-repeat stop and stop strings,
the same in every backend and in the cache identity."""

from __future__ import annotations

import sys
import types
from typing import Any

import pytest

from gsrm.backends import Backend, OpenAIBackend, TransformersBackend, VLLMBackend
from gsrm.backends.safeguards import REPEAT_RULE, apply_safeguards, should_stop
from gsrm.parse import parse_structure, repeated_step_start
from tests.char_tok import CharTok
from tests.openai_stub import chat_response, openai_stub


def step(i: int, sub: str = "How many?", ans: str = "5", meta: str = "m") -> str:
    return f"[Meta-reasoning {i}]: {meta}\n[Sub-problem {i}]: {sub}\n[Answer {i}]: {ans}\n"


NEXT = "[Meta-reasoning 9]: next\n"  # a later step begun on a complete line

REPEATS = [
    # (why, text, the step whose start is the cut, or None)
    ("a whole step written again, then the loop goes on", step(1) + step(2) + NEXT, 2),
    ("spacing is not content: the decoder may tokenise a repeat differently",
     step(1, ans="5 laps") + step(2, ans="5  laps") + NEXT, 2),
    ("the repeat need not follow the step it copies",
     step(1, "A?", "1") + step(2, "B?", "2") + step(3, "A?", "1") + NEXT, 3),
    ("the first repeat wins", step(1) + step(2, "B?") + step(3) + step(4, "B?") + NEXT, 3),
    ("tag spellings the parser accepts count too (one grammar)",
     step(1) + "**[Meta-reasoning 2]**: m\n[Query 2]: How many?\n[Answer 2]: 5\n" + NEXT, 2),
    ("a different meta-reasoning is a different step (e.g. a reflection re-checking it)",
     step(1) + step(2, meta="Let me verify that.") + NEXT, None),
    ("case is content: only an exact repeat stops", step(1, ans="5 laps") + step(2, ans="5 Laps")
     + NEXT, None),
    ("one question asked again with new answers is not a repeat (no in-a-row rule)",
     step(1, ans="15") + step(2, ans="30") + step(3, ans="45") + step(4, ans="60") + NEXT, None),
    ("the repeat is not complete until the next step begins", step(1) + step(2), None),
    ("... on a complete line", step(1) + step(2) + "[Meta-reasoning 3]: m", None),
    ("a final-answer line does not complete it either",
     step(1) + step(2) + "So the final answer is: 5\n", None),
    ("an empty answer is no content to repeat", step(1, ans="") + step(2, ans="") + NEXT, None),
    ("no steps at all", "just prose\nmore prose\n", None),
]


@pytest.mark.parametrize(("why", "text", "repeat"), REPEATS, ids=[r[0] for r in REPEATS])
def test_repeated_step_start(why: str, text: str, repeat: int | None) -> None:
    cut = repeated_step_start(text)
    if repeat is None:
        assert cut is None
        return
    assert cut is not None and text[cut:].lstrip("*").startswith(f"[Meta-reasoning {repeat}]")
    assert len(parse_structure(text[:cut]).steps) == repeat - 1


LOOP = step(1, "Eggs?", "9") + step(2, "Money?", "$18") + step(3, "Eggs?", "9") + step(4)
CASES = [
    # (why, text, stop strings, stop_repeats, kept, stopped, repeated)
    ("a repeat and what follows are dropped", LOOP, None, True,
     step(1, "Eggs?", "9") + step(2, "Money?", "$18").rstrip(), False, True),
    ("the safeguard can be turned off", LOOP, None, False, LOOP, False, False),
    ("a stop string cuts first; nothing repeats before it", LOOP, ["\n[Meta-reasoning 2]"], True,
     step(1, "Eggs?", "9").rstrip(), True, False),
    ("an unmatched stop string changes nothing", step(1), ["#### "], True, step(1), False, False),
    ("a loop inside a line is cut after its first copy",
     "[Meta-reasoning 1]: Find the value of $d$ and $c$ and $c$ and $c$ and $c$ and $c$ and",
     None, True, "[Meta-reasoning 1]: Find the value of $d$ and $c", False, True),
    ("chunks under 8 characters are not loops (digits, short lists)",
     "[Answer 1]: 0.3333 = 1/3, so 10, 20, 30 and 40 and 40 and 40", None, True,
     "[Answer 1]: 0.3333 = 1/3, so 10, 20, 30 and 40 and 40 and 40", False, False),
    ("a long chunk three times is a loop",
     ("[Meta-reasoning 1]: Find how many values of $a$ work and how many values of $a$ work "
      "and how many values of $a$ work and how"), None, True,
     "[Meta-reasoning 1]: Find how many values of $a$ work a", False, True),
    ("a loop over lines is the step rule's, not this one's",
     "[Answer 1]: 5\n5\n5\n5\n5", None, True, "[Answer 1]: 5\n5\n5\n5\n5", False, False),
]


@pytest.mark.parametrize(("why", "text", "stop", "on", "kept", "stopped", "repeated"), CASES,
                         ids=[c[0] for c in CASES])
def test_apply_safeguards(why: str, text: str, stop: list[str] | None, on: bool, kept: str,
                          stopped: bool, repeated: bool) -> None:
    assert apply_safeguards(text, stop, on) == (kept, stopped, repeated)


@pytest.mark.parametrize("full", [LOOP + "[Sub-problem 5]: more", step(1) + step(2) + step(3),
                                  step(1, "What is } } } } } } } } } } } }", "1")],
                         ids=["loop", "identical steps", "loop in a line"])
def test_stopping_early_keeps_what_a_full_completion_keeps(full: str) -> None:
    """A decoder that stops at the first prefix ``should_stop`` accepts keeps the same text as a
    server that returns the whole completion: the backend cannot change the reward."""
    want = apply_safeguards(full, None, True)
    hits = [n for n in range(len(full) + 1) if should_stop(full[:n], None, True)]
    assert hits, "the loop must be caught before the end"
    for n in hits:
        assert apply_safeguards(full[:n], None, True) == want


class _Chat:
    """The attribute path ``client.chat.completions.create`` of an OpenAI client."""

    def __init__(self, create: Any) -> None:
        self.chat = types.SimpleNamespace(completions=types.SimpleNamespace(create=create))


def _via_transformers(raw: str, at_budget: bool, stop: list[str] | None) -> Any:
    b = TransformersBackend(adapter=None)
    b._tok = CharTok()
    ids = [ord(c) for c in raw]
    return b._result(ids, 7, len(ids) if at_budget else len(ids) + 100, not at_budget, stop)


def _via_openai(raw: str, at_budget: bool, stop: list[str] | None) -> Any:
    def reply(body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        return 200, chat_response(raw, finish_reason="length" if at_budget else "stop",
                                  prompt_tokens=7, completion_tokens=len(raw))

    with openai_stub(reply) as (url, _):
        return OpenAIBackend(base_url=url, shots=0).generate(
            [[{"role": "user", "content": "x"}]], stop=stop)[0]


def _via_vllm(raw: str, at_budget: bool, stop: list[str] | None,
              monkeypatch: pytest.MonkeyPatch) -> Any:
    fake = types.ModuleType("vllm")
    fake.SamplingParams = lambda **kw: kw  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "vllm", fake)
    out = types.SimpleNamespace(text=raw, token_ids=list(raw),
                                finish_reason="length" if at_budget else "stop")
    b = VLLMBackend(adapter=None)
    b._llm = types.SimpleNamespace(chat=lambda *a, **k: [types.SimpleNamespace(
        prompt_token_ids=[0] * 7, outputs=[out])])
    return b.generate([[{"role": "user", "content": "x"}]], stop=stop)[0]


SAME = [
    # (why, raw completion, ran to the budget, stop strings)
    ("a loop cut at its repeat is not a budget hit", LOOP + "[Sub-problem 5]: How", True, None),
    ("a budget hit with no repeat is reported", step(1) + "[Meta-reasoning 2]: and th", True, None),
    ("a stop string ends it before the budget", LOOP, False, ["\n[Meta-reasoning 2]"]),
    ("an honest completion is kept whole", step(1) + "So the final answer is: 5", False, None),
]


@pytest.mark.parametrize(("why", "raw", "at_budget", "stop"), SAME, ids=[c[0] for c in SAME])
def test_every_backend_keeps_the_same_text(why: str, raw: str, at_budget: bool,
                                           stop: list[str] | None,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    gens = [_via_transformers(raw, at_budget, stop), _via_openai(raw, at_budget, stop),
            _via_vllm(raw, at_budget, stop, monkeypatch)]
    facts = {(g.text, g.hit_max_new_tokens, g.stopped_in_loop) for g in gens}
    kept, _, repeated = apply_safeguards(raw, stop, True)
    assert facts == {(kept, at_budget and kept == raw, repeated)}


@pytest.mark.parametrize("backend", [
    lambda **kw: TransformersBackend(adapter=None, **kw),
    lambda **kw: OpenAIBackend(base_url="http://127.0.0.1:9/v1", **kw),
    lambda **kw: VLLMBackend(adapter=None, **kw),
], ids=["transformers", "openai", "vllm"])
def test_safeguards_are_in_the_cache_identity(backend: Any) -> None:
    on, off = backend(), backend(stop_repeats=False)
    assert on.identity()["stop_repeats"] == REPEAT_RULE and on.identity()["max_new_tokens"]
    assert off.identity()["stop_repeats"] is False
    assert on.cache_key() != off.cache_key()
    assert isinstance(on, Backend)
