"""The describer's workload through each CPU engine: time, tokens/s, and the same text or not.

Prints ONE JSON line. The workload is what the two-stage GSRM sends its LM: one describer
prompt per step span of held-out GSM8K solutions (segmented by the shipped segmenter), ~250
prompt tokens sharing the system prompt, ~50-token outputs, all in one batch. Engines:

- ``decode``: the ``transformers`` backend, i.e. ``gsrm.decode.greedy_decode`` (our
  continuous-batching loop on transformers' model forward, float32); the reference text;
- ``generate-batch``: transformers' own continuous batching (``model.generate_batch``, paged
  attention) on the same loaded model and prompts, the completions turned into results by
  the backend's own ``_result`` (stop strings, safeguards);
- ``openvino-int8`` / ``openvino-f16``: the ``openvino`` backend (OpenVINO GenAI on the GGUF
  export; its load and a first-use export are not timed).

Why: issue 16 asks whether ``gsrm/decode.py``, which subclasses transformers' cache
internals, can give way to transformers' ``generate_batch`` or to OpenVINO; this prints the
figures that decide it. Each engine is warmed up on a few prompts first; one timed run each.

Example::

    $ python benchmarks/engines.py --data ../shared/data
    $ python benchmarks/engines.py --engines decode openvino-int8 --items 1000:1010
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from anywhere: import the checkout's gsrm
    sys.path.insert(0, str(ROOT))

from benchmarks.openvino_parity import (  # after the path set-up
    _slice,
    gsm8k_test_file,
    span_conversations,
)

ENGINES = ("decode", "generate-batch", "openvino-int8", "openvino-f16")
Generate = Callable[[list[Any], int], list[Any]]  # (conversations, max_new_tokens) -> Generations


def generate_batch_engine(backend: Any) -> Generate:
    """Greedy generations through transformers' ``generate_batch`` on ``backend``'s model."""
    from transformers import GenerationConfig

    from gsrm.spanformat import get_span_format

    backend.load()
    eos = backend._eos_ids()
    stop = get_span_format(backend.span_format).stop

    def run(convs: list[Any], limit: int) -> list[Any]:
        prompts = [backend._prompt_ids(c) for c in convs]
        config = GenerationConfig(max_new_tokens=limit, do_sample=False,
                                  eos_token_id=sorted(eos),
                                  pad_token_id=backend._tok.pad_token_id)
        out = backend._model.generate_batch(prompts, generation_config=config,
                                            progress_bar=False)
        by_id = {o.request_id: o for o in out.values()}
        gens = []
        for i, prompt in enumerate(prompts):
            toks = list(by_id[f"req_{i}"].generated_tokens)
            n = next((j for j, t in enumerate(toks) if t in eos), len(toks))
            # the backend's own result builder: decoding, budget flag, stop strings, safeguards
            gens.append(backend._result(toks[:n], len(prompt), limit, n < len(toks), stop))
        return gens

    return run


def make_engine(name: str, threads: int, batch_size: int) -> Generate:
    """The generate function of one engine (loaded; an openvino export is made if missing)."""
    from gsrm.backends import get_backend
    from gsrm.spanformat import get_span_format

    if name == "generate-batch":
        return generate_batch_engine(get_backend("transformers", threads=threads,
                                                 batch_size=batch_size))
    if name == "decode":
        backend = get_backend("transformers", threads=threads, batch_size=batch_size)
    else:
        backend = get_backend("openvino", weights=name.removeprefix("openvino-"),
                              threads=threads, batch_size=batch_size)
    backend.load()  # type: ignore[attr-defined]
    stop = get_span_format(backend.span_format).stop
    return lambda convs, limit: backend.generate(convs, limit, stop=stop)


def main(argv: Sequence[str] | None = None) -> int:
    """Print the JSON line; 2 when the data file is missing."""
    p = argparse.ArgumentParser(prog="python benchmarks/engines.py",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default="../shared/data", help="data root holding gsm8k/")
    p.add_argument("--items", type=_slice, default=(1000, 1032),
                   help="GSM8K test items whose spans are described (default: 1000:1032)")
    p.add_argument("--engines", nargs="+", choices=ENGINES, default=list(ENGINES))
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=64)
    args = p.parse_args(argv)
    path = gsm8k_test_file(args.data)
    if path is None:
        return 2
    import torch

    from gsrm.describe import DESCRIBE_MAX_NEW_TOKENS

    torch.set_num_threads(args.threads)
    convs = span_conversations(path, *args.items)
    rows: dict[str, dict[str, Any]] = {}
    reference: list[str] | None = None
    for name in args.engines:
        run = make_engine(name, args.threads, args.batch_size)
        run(convs[:4], 16)  # warm-up, untimed
        t0 = time.perf_counter()
        gens = run(convs, DESCRIBE_MAX_NEW_TOKENS)
        wall = time.perf_counter() - t0
        texts = [g.text for g in gens]
        tokens = sum(g.completion_tokens for g in gens)
        rows[name] = {"wall_s": round(wall, 1), "completion_tokens": tokens,
                      "tok_per_s": round(tokens / wall, 1),
                      "at_budget": sum(g.hit_max_new_tokens for g in gens)}
        if reference is None:
            reference = texts
        rows[name]["identical_to_first"] = sum(a == b for a, b in zip(texts, reference))
    print(json.dumps({"benchmark": "engines", "items": list(args.items), "spans": len(convs),
                      "threads": args.threads, "batch_size": args.batch_size,
                      "reference": args.engines[0], "engines": rows}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
