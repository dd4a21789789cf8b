"""Seconds per LoRA training step of an SFT preset, float32 against bf16 autocast; ONE JSON line.

Why: ``gsrm-train sft`` and ``gsrm-train segmenter`` ask for bf16 (autocast on a CPU), the
fast path on CPUs with bf16 instructions (AVX512-BF16, AMX). On a CPU without them oneDNN
emulates bf16, and a step can take many times as long as in float32, so
``training.precision.use_bf16`` grants the request only where the hardware has it. This
script measures both on the machine it runs on and prints which one the training would use
(``chosen``), so the choice can be checked where it matters.

A step is what ``Trainer`` does per optimiser step of the preset at ``--grad-accum 1``: a
forward and backward pass of the embedded SmolLM2-135M-Instruct with the preset's LoRA
adapter (``training.sft.PRESETS``) over ``--batch`` rows of ``--length`` tokens (random ids,
seeded: the cost of a step does not depend on the text), then an AdamW step. One untimed
warm-up step per mode, then ``--repeats`` timed ones, round-robin; medians are reported. A
mode still running past ``--budget-s`` seconds is reported as at least that long (an
emulated bf16 step of the describer preset's full batch can take minutes).

Example::

    $ python benchmarks/train_step.py --batch 2 --length 256 --repeats 2
    $ python benchmarks/train_step.py --preset describer-cpu --batch 8 --length 400
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from anywhere: import the checkout's packages
    sys.path.insert(0, str(ROOT))

MODES = ("float32", "bf16-autocast")


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", default="describer-cpu", help="training.sft preset (its LoRA)")
    p.add_argument("--batch", type=int, default=2, help="rows per step")
    p.add_argument("--length", type=int, default=256, help="tokens per row")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--budget-s", type=float, default=300.0,
                   help="stop timing a mode after one step longer than this")
    args = p.parse_args(argv)

    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from gsrm.weights import default_model_dir
    from training.precision import cpu_has_bf16, use_bf16
    from training.sft import PRESETS

    if args.preset not in PRESETS:
        p.error(f"unknown preset {args.preset!r}; known: {sorted(PRESETS)}")
    preset = PRESETS[args.preset]
    if preset.base_model is not None:
        p.error(f"preset {args.preset!r} trains {preset.base_model}, not the embedded model")
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(str(default_model_dir()), dtype=torch.float32)
    model = get_peft_model(model, LoraConfig(
        r=preset.lora_r, lora_alpha=preset.lora_alpha, lora_dropout=preset.lora_dropout,
        target_modules=list(preset.target_modules), task_type="CAUSAL_LM"))
    opt = torch.optim.AdamW([q for q in model.parameters() if q.requires_grad],
                            lr=preset.learning_rate)
    ids = torch.randint(0, model.config.vocab_size, (args.batch, args.length))

    def step(mode: str) -> float:
        t = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=mode == "bf16-autocast"):
            loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
        return time.perf_counter() - t

    times: dict[str, list[float]] = {m: [] for m in MODES}
    over: set[str] = set()
    for mode in MODES:  # warm-up (also finds a mode too slow to repeat)
        if step(mode) > args.budget_s:
            over.add(mode)
    for _ in range(args.repeats):
        for mode in MODES:
            if mode not in over:
                times[mode].append(step(mode))
    median = {m: round(statistics.median(times[m]), 2) if times[m] else None for m in MODES}
    out = {
        "benchmark": "train_step", "preset": args.preset, "batch": args.batch,
        "length": args.length, "repeats": args.repeats, "threads": torch.get_num_threads(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "cpu_has_bf16": cpu_has_bf16(),
        "chosen": "bf16-autocast" if use_bf16(preset.bf16, cuda=False) else "float32",
        "step_s": median,
        "over_budget_s": {m: args.budget_s for m in sorted(over)},
        "bf16_over_float32": (round(median["bf16-autocast"] / median["float32"], 2)
                              if median["bf16-autocast"] and median["float32"] else None),
        "tokens_per_s": {m: round(args.batch * args.length / v, 1) if v else None
                         for m, v in median.items()},
    }
    print(json.dumps(out), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
