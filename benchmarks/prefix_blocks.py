"""What the OpenVINO engine's 32-token KV blocks cost the describer, and what sharing a partial
block does to its outputs; prints ONE JSON line.

Why: every span prompt of a problem shares the system prompt and the problem (a GRPO group's
32 students are one problem), and the engine's prefix cache keeps whole KV blocks
(``OpenVINOBackend.kv_block_tokens``), so the shared prefix's tokens past its last full block
are prefilled again for every span (``benchmarks/decompose.py --breakdown`` counts them:
about 28% of what the reward server's students prefill). This script describes one trace set's
spans three ways, each on a fresh pipeline, and reports the time of the describer's batch
(every distinct span prompt to the describer's budget, after its warm-up, through
``OpenVINOBackend.generate_ids``: the backend's own generation, on prompts given as token ids),
the completion tokens, the completions without a complete step, and how many completions are
the default's text exactly:

- ``default``: the shipped path (``gsrm.describe.warm_prefixes``: one whole span prompt per
  problem prefilled first, so whole blocks of the shared prefix are cached);
- ``exact_prefix``: the warm-up prefills each problem's shared prefix exactly (its prompts'
  longest common prefix of token ids), so its last, partly filled block is in the cache too;
- ``aligned``: each prompt gets space tokens at the end of its system turn, as many as bring
  the shared prefix to a whole number of blocks (``align_ids``), then the default warm-up; the
  model was not trained with them, so its text can change (``same_as_default`` says how often).

No prompt here is what a user's decomposition uses except ``default``: this measures the
engine, to decide what a describer trained on block-aligned prompts would buy. The repair and
retry rounds of ``describe_many`` are not run. ``--fixed-new-tokens N`` makes every reply
exactly N tokens long (EOS ignored, no texts compared): the time of a shorter reply, e.g. one
without the two line headers, that this describer does not write.

Example::

    $ python benchmarks/prefix_blocks.py --traces /tmp/students32.jsonl --threads 2
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

MODES = ("default", "exact_prefix", "aligned")


def align_ids(ids: Sequence[int], shared: int, at: int, block: int, pad: int) -> list[int]:
    """``ids`` with ``pad`` tokens inserted at index ``at`` (inside the shared prefix), as many
    as bring the ``shared`` prefix to a multiple of ``block`` tokens. Pure.

    >>> align_ids([1, 2, 3, 4, 5], shared=3, at=1, block=4, pad=0)
    [1, 0, 2, 3, 4, 5]
    >>> align_ids([1, 2, 3, 4, 5], shared=4, at=1, block=4, pad=0)
    [1, 2, 3, 4, 5]
    """
    if not 0 <= at <= shared:
        raise ValueError(f"the padding must go inside the shared prefix (at={at}, "
                         f"shared={shared})")
    n = -shared % block
    return [*ids[:at], *[pad] * n, *ids[at:]]


def fixed_length(backend: Any, prompts: list[list[int]], new_tokens: int) -> list[list[int]]:
    """Completion ids of exactly ``new_tokens`` tokens for every prompt (greedy; EOS and stop
    strings ignored), through the backend's pipeline: the time of a reply of that length,
    whatever this describer writes."""
    import numpy as np
    import openvino as ov
    import openvino_genai as og

    cfg = og.GenerationConfig()
    cfg.max_new_tokens = new_tokens
    cfg.do_sample = False
    cfg.ignore_eos = True
    outs = backend._pipe.generate([ov.Tensor(np.asarray([p], dtype=np.int64)) for p in prompts],
                                  [cfg] * len(prompts))
    return [list(o.m_generation_ids[0]) if o.m_generation_ids else [] for o in outs]


def run_mode(backend: Any, mode: str, prompts: list[list[int]], problems: Sequence[str],
             system_end: list[int], max_new_tokens: int, stop: Sequence[str],
             fixed_new_tokens: int | None = None) -> dict[str, Any]:
    """Describe ``prompts`` (token ids) on a fresh pipeline after ``mode``'s warm-up
    (``fixed_new_tokens``: replies of exactly that length, ``fixed_length``; no texts)."""
    from benchmarks.decompose import common_prefix, prefix_past_block

    backend.reset()
    backend.load()
    groups: dict[str, list[int]] = {}
    for j, p in enumerate(problems):
        groups.setdefault(p.strip(), []).append(j)
    block = backend.kv_block_tokens
    if mode == "aligned":
        pad = backend._tok.convert_tokens_to_ids("Ġ")  # a space, as one token
        for members in groups.values():
            if len(members) < 2:  # nothing shared, nothing to align
                continue
            shared = common_prefix([prompts[j] for j in members])
            for j in members:
                prompts[j] = align_ids(prompts[j], shared, system_end[j], block, pad)
    warm: list[list[int]] = []
    for members in groups.values():
        if len(members) < 2:
            continue
        if mode == "exact_prefix":
            warm.append(prompts[members[0]][:common_prefix([prompts[j] for j in members])])
        else:
            warm.append(prompts[members[0]])
    t0 = time.perf_counter()
    backend.generate_ids(warm, 1)
    t1 = time.perf_counter()
    if fixed_new_tokens:
        texts = None
        completion = sum(map(len, fixed_length(backend, prompts, fixed_new_tokens)))
    else:
        gens = backend.generate_ids(prompts, max_new_tokens, stop)
        texts = [g.text for g in gens]
        completion = sum(g.completion_tokens for g in gens)
    t2 = time.perf_counter()
    _, shared_past = prefix_past_block(prompts, problems, block)
    return {"warmup_s": round(t1 - t0, 3), "describe_s": round(t2 - t1, 3),
            "texts": texts, "prompt_tokens": sum(len(p) for p in prompts),
            "prefix_tokens_past_block": shared_past, "completion_tokens": completion}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python benchmarks/prefix_blocks.py",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--traces", type=Path, required=True,
                   help="JSON lines of {problem, reasoning} (e.g. the reward server's students)")
    p.add_argument("--limit", type=int, default=None, help="traces (default: all)")
    p.add_argument("--batch-size", type=int, default=64, help="engine batch (default: 64)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads of the engine")
    p.add_argument("--fixed-new-tokens", type=int, default=None, metavar="N",
                   help="every reply exactly N tokens (EOS and stop strings ignored; no texts "
                        "compared): the time of a reply length another describer would write, "
                        "e.g. one without the two headers (default: the describer's own)")
    p.add_argument("--modes", default=",".join(MODES),
                   help=f"comma-separated, from {', '.join(MODES)} (default: all; "
                        "same_as_default needs default first)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Print the JSON line; 2 on a bad trace file or mode."""
    args = build_parser().parse_args(argv)
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    if bad := [m for m in modes if m not in MODES]:
        print(f"error: unknown mode(s) {bad}; choose from {MODES}", file=sys.stderr)
        return 2
    if args.fixed_new_tokens is not None and args.fixed_new_tokens < 1:
        print(f"error: --fixed-new-tokens must be at least 1, got {args.fixed_new_tokens}",
              file=sys.stderr)
        return 2
    try:
        rows = [json.loads(line) for line in args.traces.read_text().splitlines()
                if line.strip()][: args.limit]
        items = [(r["problem"], r["reasoning"]) for r in rows]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        print(f"error: {args.traces}: {exc}", file=sys.stderr)
        return 2

    from gsrm.backends import OpenVINOBackend
    from gsrm.describe import first_step, span_prompts
    from gsrm.segment import get_segmenter
    from gsrm.spanformat import get_span_format

    backend = OpenVINOBackend(batch_size=args.batch_size, threads=args.threads)
    backend.load()
    fmt = get_span_format(backend.span_format)
    spans = get_segmenter().segment_many([r for _, r in items])
    convs, problems, _ = span_prompts(fmt, backend.shots, [
        (p, r, s) for (p, r), s in zip(items, spans, strict=True)])
    base = [backend._prompt_ids(c) for c in convs]
    end_of_system = backend._tok.convert_tokens_to_ids("<|im_end|>")
    system_end = [ids.index(end_of_system) if end_of_system in ids else 0 for ids in base]
    result: dict[str, Any] = {"benchmark": "prefix_blocks", "model": backend.model_id,
                              "traces": len(items), "distinct_prompts": len(convs),
                              "kv_block_tokens": backend.kv_block_tokens,
                              "max_new_tokens": fmt.max_new_tokens,
                              "fixed_new_tokens": args.fixed_new_tokens, "modes": {}}
    reference: list[str] | None = None
    for mode in modes:
        got = run_mode(backend, mode, [list(b) for b in base], problems, system_end,
                       fmt.max_new_tokens, fmt.stop, args.fixed_new_tokens)
        texts = got.pop("texts")
        got["incomplete"] = None if texts is None else sum(
            not first_step(t, fmt)[0].is_complete for t in texts)
        if mode == "default":
            reference = texts
        got["same_as_default"] = None if reference is None or texts is None else round(
            sum(a == b for a, b in zip(reference, texts, strict=True)) / max(1, len(texts)), 3)
        result["modes"][mode] = got
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
