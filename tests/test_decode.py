"""``gsrm.decode.greedy_decode`` against transformers' own greedy ``generate``.

A tiny randomly initialised Llama (built from a config, no download, float32) keeps this fast;
the embedded model's path is covered by the slow test in tests/test_backends.py. Each case
decodes prompts of different lengths with a batch smaller than the number of prompts, so rows
finish, leave, and new rows are prefilled and merged into the running batch: the output must
still equal each prompt decoded alone.
"""

from __future__ import annotations

from typing import Any

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from gsrm.decode import Decoded, cache_kwarg, greedy_decode, output_cache

VOCAB = 97
EOS = 3
PAD = 0


@pytest.fixture(scope="module")
def model() -> Any:
    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(
        vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
        eos_token_id=EOS, pad_token_id=PAD, bos_token_id=1,
    )
    m = transformers.LlamaForCausalLM(cfg).eval()
    # scale the output layer so greedy choices are not near-ties between float paths
    with torch.no_grad():
        m.lm_head.weight.mul_(20)
    return m


def reference(model: Any, prompt: list[int], max_new: int) -> Decoded:
    """One prompt alone through ``model.generate`` (no padding), cut at EOS."""
    with torch.inference_mode():
        out = model.generate(torch.tensor([prompt]), attention_mask=torch.ones(1, len(prompt),
                             dtype=torch.long), max_new_tokens=max_new, do_sample=False,
                             pad_token_id=PAD, eos_token_id=EOS)
    new = out[0, len(prompt):].tolist()
    if EOS in new:
        return Decoded(ids=new[: new.index(EOS)], reason="eos")
    return Decoded(ids=new, reason="length")


def prompts(lengths: list[int], seed: int) -> list[list[int]]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(4, VOCAB, (n,), generator=g).tolist() for n in lengths]


def prefix_and_cache(model: Any, plen: int, seed: int) -> tuple[list[int], Any]:
    """A random shared prefix of ``plen`` tokens and the model's cache of it (none if empty)."""
    if not plen:
        return [], None
    prefix = prompts([plen], seed=seed)[0]
    with torch.inference_mode():
        kv = output_cache(model(input_ids=torch.tensor([prefix]), use_cache=True,
                                **{cache_kwarg(model): transformers.DynamicCache()}))
    return prefix, kv


CASES = [
    # (name, prompt lengths, batch size, refill fraction, max new tokens, prefix length,
    #  prompts per prefill forward)
    ("one batch", [5, 9, 3], 4, 0.5, 12, 0, 8),
    ("refill after every finish", [7, 2, 11, 4, 6, 9, 3], 2, 0.5, 10, 0, 8),
    ("eager refill, wider batch", [3, 14, 8, 5, 12, 6, 10, 4], 3, 0.9, 16, 0, 8),
    ("shared prefix", [4, 9, 2, 7, 5], 2, 0.5, 12, 6, 8),
    ("shared prefix, batch 1", [6, 3, 8], 1, 0.5, 8, 5, 8),
    ("prefill in chunks of 2", [9, 4, 13, 6, 2, 8, 11, 5, 7], 5, 0.5, 14, 4, 2),
]


@pytest.mark.parametrize(("name", "lengths", "bs", "refill", "max_new", "plen", "chunk"), CASES,
                         ids=[c[0] for c in CASES])
def test_matches_generate_one_prompt_at_a_time(model: Any, name: str, lengths: list[int], bs: int,
                                               refill: float, max_new: int, plen: int,
                                               chunk: int) -> None:
    tails = prompts(lengths, seed=len(name))
    prefix, kv = prefix_and_cache(model, plen, seed=99)
    stats: dict[str, float] = {}
    got = greedy_decode(model, tails, max_new_tokens=max_new, eos_ids={EOS}, pad_id=PAD,
                        batch_size=bs, refill_at=refill, prefill_chunk=chunk, prefix=prefix,
                        prefix_cache=kv,
                        stats=stats)
    want = [reference(model, prefix + t, max_new) for t in tails]
    assert got == want
    if len(tails) > bs:  # rows joined a running batch: more than one prefill happened
        assert stats["prefills"] >= 2
    assert stats["row_steps"] <= bs * stats["steps"]


def test_should_stop_ends_a_row_and_says_so(model: Any) -> None:
    tails = prompts([5, 8], seed=1)
    free = greedy_decode(model, tails, max_new_tokens=20, eos_ids=set(), pad_id=PAD)
    assert all(d.reason == "length" and len(d.ids) == 20 for d in free)
    asked: list[tuple[int, int]] = []

    def stop(i: int, ids: list[int]) -> bool:
        asked.append((i, len(ids)))
        return len(ids) >= (8 if i == 0 else 12)  # the index names the row's prompt

    got = greedy_decode(model, tails, max_new_tokens=20, eos_ids=set(), pad_id=PAD,
                        should_stop=stop, stop_every=4, stop_min_new=4)
    assert [d.reason for d in got] == ["stop", "stop"]
    assert [d.ids for d in got] == [free[0].ids[:8], free[1].ids[:12]]  # same tokens up to it
    assert set(asked) == {(0, 4), (0, 8), (1, 4), (1, 8), (1, 12)}  # every 4 tokens from the 4th


def test_edge_cases(model: Any) -> None:
    assert greedy_decode(model, [], max_new_tokens=5, eos_ids={EOS}, pad_id=PAD) == []
    zero = greedy_decode(model, [[5, 6]], max_new_tokens=0, eos_ids={EOS}, pad_id=PAD)
    assert zero == [Decoded(ids=[], reason="length")]
    with pytest.raises(ValueError, match="prefix_cache"):
        greedy_decode(model, [[5]], max_new_tokens=2, eos_ids={EOS}, pad_id=PAD, prefix=[1, 2])

