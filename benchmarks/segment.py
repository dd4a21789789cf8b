"""Segmentation speed: seconds to segment one trace at batch 1 (model load excluded).

Prints one JSON line: the trace's characters, units and MiniLM word pieces, the segmenter's
load time, and the median / min / max seconds over ``--repeats`` runs of
``Segmenter.segment_many([trace])``. The default trace is built from the shipped examples
until it holds ``--tokens`` SmolLM2 tokens (the describer's tokenizer; ~1,200 by default),
so the figure answers "how long does stage 1 take on a 1,200-token trace".

    python benchmarks/segment.py --tokens 1200 --repeats 7 --threads 2
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def long_trace(tokens: int) -> tuple[str, int]:
    """A trace of about ``tokens`` SmolLM2 tokens, from the examples' reasoning texts."""
    from transformers import AutoTokenizer

    from gsrm.weights import default_model_dir

    tok = AutoTokenizer.from_pretrained(str(default_model_dir()))
    parts = []
    for name in ("teacher.json", "student_aligned.json", "student_misaligned.json"):
        parts.append(json.loads((ROOT / "examples" / name).read_text())["reasoning"])
    text, k = "", 0
    while len(tok(text)["input_ids"]) < tokens:
        text += ("\n\n" if text else "") + parts[k % len(parts)]
        k += 1
    ids = tok(text)["input_ids"][:tokens]
    return tok.decode(ids), len(ids)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tokens", type=int, default=1200)
    p.add_argument("--trace", type=Path, default=None, help="a text file to segment instead")
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--segmenter", default="trained")
    args = p.parse_args(argv)
    import torch

    from gsrm.segment import get_segmenter
    from gsrm.text import units

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.trace:
        text, n_tokens = args.trace.read_text("utf-8"), None
    else:
        text, n_tokens = long_trace(args.tokens)
    t0 = time.perf_counter()
    seg = get_segmenter(args.segmenter)
    seg.segment_many(["Warm up. Then load."])
    load = time.perf_counter() - t0
    times, spans = [], []
    for _ in range(args.repeats):
        t = time.perf_counter()
        spans = seg.segment_many([text])[0]
        times.append(time.perf_counter() - t)
    print(json.dumps({
        "benchmark": "segment", "segmenter": args.segmenter, "chars": len(text),
        "smollm2_tokens": n_tokens, "units": len(units(text)), "steps": len(spans),
        "threads": torch.get_num_threads(), "load_s": round(load, 3),
        "median_s": round(statistics.median(times), 4), "min_s": round(min(times), 4),
        "max_s": round(max(times), 4), "repeats": args.repeats,
    }))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
