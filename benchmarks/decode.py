"""Decomposition decode speed of the default GSRM backend; prints ONE JSON line on stdout.

Why: inside an RL loop every student completion is decomposed, so how fast the local
``TransformersBackend`` turns a reasoning trace into steps bounds the reward's throughput.
Two levers are measured against plain greedy decoding at batch 1:

- batching: 8 different traces generated as one left-padded batch (aggregate tokens/s);
- prompt-lookup speculation (``prompt_lookup=N``): a decomposition copies long spans of the
  trace, so n-gram drafts from the prompt are often accepted; the output must stay
  token-identical to greedy.

Every configuration goes through the backend's own ``generate`` on the messages that
``decompose_many`` would build (``Backend.fit`` -> ``gsrm.prompts.build_messages`` with the
few-shot examples). Timing is instrumented, not re-implemented: a forward hook stamps each
model call, so the first stamp splits prefill (the ~1k-token few-shot prompt) from decoding
(for batches over 8 the prefill takes several forwards and the split is approximate); the
identity check compares the decoded texts of prompt lookup (``model.generate``) and of plain
greedy decoding (``gsrm.decode``'s continuous-batching loop). The process warms up once before timing; then every repeat runs every
configuration once (round-robin, so load drift on a shared machine hits all alike) and the
figures are medians over ``--repeats``.
The backend's repeated-step stop is off unless ``--stop-repeats``, so every configuration decodes the
same number of tokens (EOS can still end a row early; ``stopped_early`` counts those).
Missed targets are reported as measured, with ``targets_met`` booleans.

The traces are real: GSM8K *train* solutions of at least a third of the budget, in file order
(calculator notes ``<<...>>`` stripped, ``#### N`` written as "The answer is N."),
concatenated line by line up to ``--tokens`` tokens,
from ``--data``/gsm8k/train.jsonl; without it, ``examples/teacher.json`` (then the batch repeats
the few example traces there are, and ``distinct_traces`` says so).

Example::

    $ python benchmarks/decode.py --quick
    $ python benchmarks/decode.py --repeats 3 --max-new-tokens 128 --batch-sizes 1 8 --lookup 3 10
    $ python benchmarks/decode.py --device cuda --dtype bfloat16 --batch-sizes 1 32 128 --lookup
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import re
import resource
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from anywhere: import the checkout's gsrm
    sys.path.insert(0, str(ROOT))

Item = tuple[str, str]  # (problem, reasoning)

BATCH_TARGET = 3.0  # aggregate tokens/s at the largest batch over batch 1
LOOKUP_TARGET = 1.5  # prompt-lookup tokens/s over plain greedy, batch 1

_CALC = re.compile(r"<<[^<>]*>>")


# --------------------------------------------------------------------------- traces
def solution_lines(answer: str) -> list[str]:
    """A GSM8K solution as clean lines: calculator notes dropped, '#### N' as a sentence.

    >>> solution_lines("He has 2+3 = <<2+3=5>>5 pens.\\n#### 5")
    ['He has 2+3 = 5 pens.', 'The answer is 5.']
    """
    out: list[str] = []
    for line in answer.splitlines():
        line = re.sub(r"\s+", " ", _CALC.sub("", line)).strip()
        if not line:
            continue
        if line.startswith("####"):
            line = f"The answer is {line[4:].strip()}."
        out.append(line)
    return out


def build_traces(
    rows: Sequence[dict[str, str]], tokens: int, count: int, count_tokens: Callable[[str], int]
) -> list[Item]:
    """``count`` distinct (problem, reasoning) items of at most ``tokens`` reasoning tokens.

    Consecutive solutions are concatenated line by line until the next line would pass the
    budget (a solution cut short still contributes its question); the next trace starts at
    the next unused problem, so no two traces share text.
    """
    traces: list[Item] = []
    k = 0
    while len(traces) < count and k < len(rows):
        questions: list[str] = []
        parts: list[str] = []
        while k < len(rows):
            lines = solution_lines(rows[k]["answer"])
            taken: list[str] = []
            for line in lines:
                cand = "\n\n".join(parts + ["\n".join(taken + [line])])
                if count_tokens(cand) > tokens:
                    break
                taken.append(line)
            if not taken:
                if not parts:  # one line longer than the budget: skip this problem
                    k += 1
                    continue
                break
            questions.append(rows[k]["question"].strip())
            parts.append("\n".join(taken))
            k += 1
            if len(taken) < len(lines):
                break
        if parts:
            problem = (
                questions[0]
                if len(questions) == 1
                else " ".join(f"({i}) {q}" for i, q in enumerate(questions, start=1))
            )
            traces.append((problem, "\n\n".join(parts)))
    return traces


def load_traces(
    data: Path, tokens: int, count: int, count_tokens: Callable[[str], int]
) -> tuple[list[Item], str]:
    """The benchmark's traces and where they came from (GSM8K train, else the examples)."""
    train = data / "gsm8k" / "train.jsonl"
    if train.is_file():
        # long solutions (>= a third of the budget), in file order, so a trace is two or three
        # solutions rather than a pile of one-liners
        rows: list[dict[str, str]] = []
        with train.open(encoding="utf-8") as fh:
            for index, line in enumerate(fh):
                row = json.loads(line)
                if count_tokens("\n".join(solution_lines(row["answer"]))) >= tokens // 3:
                    rows.append(row)
                if len(rows) >= 4 * count or index >= 5000:
                    break
        traces = build_traces(rows, tokens, count, count_tokens)
        if traces:
            return traces, f"{train} (solutions of >= {tokens // 3} tokens, in file order)"
    found: list[Item] = []
    for name in ("teacher.json", "student_aligned.json", "student_misaligned.json"):
        path = ROOT / "examples" / name
        if path.is_file():
            obj = json.loads(path.read_text(encoding="utf-8"))
            found.append((obj["problem"], obj["reasoning"]))
    if not found:
        raise FileNotFoundError(f"no traces: neither {train} nor examples/teacher.json exist")
    return found, "examples/*.json (GSM8K train not found)"


# --------------------------------------------------------------------------- measuring
@dataclass
class Run:
    """One timed generate call."""

    wall_s: float
    prefill_s: float
    completion_tokens: list[int]
    hit_max: list[bool]
    looped: list[bool] = field(default_factory=list)
    forwards: int = 0
    ids: list[list[int]] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)

    @property
    def tokens(self) -> int:
        return sum(self.completion_tokens)

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.wall_s if self.wall_s > 0 else 0.0

    @property
    def decode_tokens_per_s(self) -> float:
        """Tokens after the first (which the prefill pass produces) per second of decoding."""
        decode_s = self.wall_s - self.prefill_s
        later = self.tokens - len(self.completion_tokens)
        return later / decode_s if decode_s > 0 else 0.0


def _synchronizer(model: Any) -> Callable[[], None]:
    """``torch.cuda.synchronize`` for a model on a CUDA device, else a no-op."""
    device = getattr(model, "device", None)
    if getattr(device, "type", "cpu") == "cuda":
        import torch

        return functools.partial(torch.cuda.synchronize, device)
    return lambda: None


class Instrument:
    """Stamps every model forward and keeps generated ids, without changing what runs.

    A forward hook leaves ``forward``'s signature alone (generate inspects it, e.g. for
    ``logits_to_keep``); the ``generate`` wrapper uses functools.wraps for the same reason.
    """

    def __init__(self, model: Any) -> None:
        self.model = model
        self.stamps: list[float] = []
        self.outputs: list[Any] = []
        sync = _synchronizer(model)

        def stamp(*_: Any) -> None:
            sync()  # on a GPU, wait for the forward's kernels: the stamp marks its real end
            self.stamps.append(time.perf_counter())

        self._hook = model.register_forward_hook(stamp)
        original = model.generate

        @functools.wraps(original)
        def generate(*args: Any, **kwargs: Any) -> Any:
            out = original(*args, **kwargs)
            width = (kwargs.get("input_ids") if "input_ids" in kwargs else args[0]).shape[1]
            self.outputs.append(out[:, width:].tolist())
            return out

        model.generate = generate
        self._original = original

    def reset(self) -> None:
        self.stamps.clear()
        self.outputs.clear()

    def close(self) -> None:
        self._hook.remove()
        try:
            del self.model.generate
        except AttributeError:
            self.model.generate = self._original


def cut_at_eos(ids: list[int], eos: set[int]) -> list[int]:
    """The completion as the backend returns it: up to (not including) the first EOS."""
    for j, t in enumerate(ids):
        if t in eos:
            return ids[:j]
    return ids


def timed(backend: Any, inst: Instrument, convs: list[Any], max_new: int, eos: set[int]) -> Run:
    """One ``backend.generate`` call with its prefill split off by the first forward stamp."""
    inst.reset()
    t0 = time.perf_counter()
    gens = backend.generate(convs, max_new)
    wall = time.perf_counter() - t0
    prefill = (inst.stamps[0] - t0) if inst.stamps else 0.0
    # rows in the backend's (length-sorted) order; identity is only checked at batch 1
    ids = [cut_at_eos(row, eos) for out in inst.outputs for row in out]
    return Run(
        wall_s=wall,
        prefill_s=prefill,
        completion_tokens=[g.completion_tokens for g in gens],
        hit_max=[g.hit_max_new_tokens for g in gens],
        looped=[bool(getattr(g, "stopped_in_loop", False)) for g in gens],
        forwards=len(inst.stamps),
        ids=ids,
        texts=[g.text for g in gens],
    )


def summarize(runs: Sequence[Run]) -> dict[str, Any]:
    """Medians over repeats, plus what the completions were (so early stops are visible)."""
    med = statistics.median
    return {
        "wall_s": round(med(r.wall_s for r in runs), 3),
        "prefill_s": round(med(r.prefill_s for r in runs), 3),
        "tokens_per_s": round(med(r.tokens_per_s for r in runs), 3),
        "decode_tokens_per_s": round(med(r.decode_tokens_per_s for r in runs), 3),
        "completion_tokens": runs[0].completion_tokens,
        "stopped_early": sum(not h for h in runs[0].hit_max),
        "stopped_in_loop": sum(runs[0].looped),
        "forward_calls": runs[0].forwards,
        "walls_s": [round(r.wall_s, 3) for r in runs],
    }


def common_prefix(seqs: Sequence[Sequence[int]]) -> int:
    """Length of the token prefix all sequences share.

    >>> common_prefix([[1, 2, 3], [1, 2, 4], [1, 2]])
    2
    """
    if not seqs:
        return 0
    n = min(len(s) for s in seqs)
    for j in range(n):
        if any(s[j] != seqs[0][j] for s in seqs):
            return j
    return n


def peak_rss_mib() -> float:
    """Peak resident set size of this process (Linux reports KiB, macOS bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(peak / (1024 * 1024 if sys.platform == "darwin" else 1024), 1)


def load_avg() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


# --------------------------------------------------------------------------- CLI
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python benchmarks/decode.py",
        description="Decode speed of the GSRM transformers backend (one JSON line on stdout).",
    )
    p.add_argument(
        "--data",
        default=str(ROOT.parent / "shared" / "data"),
        help="data root with gsm8k/train.jsonl for real traces (default: %(default)s)",
    )
    p.add_argument("--tokens", type=int, default=300, help="reasoning tokens per trace (~)")
    p.add_argument("--repeats", type=int, default=3, help="timed runs per configuration (median)")
    p.add_argument(
        "--max-new-tokens",
        type=int,
        default=128,
        help="new tokens per decomposition (the same for every configuration)",
    )
    p.add_argument(
        "--batch-sizes",
        type=int,
        nargs="+",
        default=[1, 8],
        help="batch sizes to time; batch 1 is also the prompt-lookup baseline",
    )
    p.add_argument(
        "--lookup",
        type=int,
        nargs="*",
        default=[3, 10],
        help="prompt_lookup_num_tokens values to try at batch 1 (none: skip)",
    )
    p.add_argument("--model", default=None, help="model folder/hub id (default: embedded SmolLM2)")
    p.add_argument("--adapter", default=None, help="peft LoRA folder, or cpu-small for the shipped fine-tuned adapter (default: none, the few-shot base model)")
    p.add_argument("--dtype", default="float32", help="torch dtype name (default: %(default)s)")
    p.add_argument(
        "--device", default=None, help="torch device, e.g. cuda (default: $GSRM_DEVICE, else cpu)"
    )
    p.add_argument(
        "--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)"
    )
    p.add_argument(
        "--stop-repeats",
        action="store_true",
        help="keep the backend's repeated-step stop on (default off: every configuration decodes "
        "the same number of tokens, which is what a speed comparison needs)",
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="smoke run: 1 repeat, 32 new tokens, prompt lookup 10 only",
    )
    return p


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print one JSON line; 2 on bad arguments, 1 if the model fails."""
    args = build_parser().parse_args(argv)
    if args.quick:
        args.repeats, args.max_new_tokens, args.lookup = 1, 32, [10]
    if args.repeats < 1 or args.max_new_tokens < 2 or any(b < 1 for b in args.batch_sizes):
        print("error: --repeats >= 1, --max-new-tokens >= 2 and batch sizes >= 1", file=sys.stderr)
        return 2
    batch_sizes = sorted(set(args.batch_sizes) | {1})
    started = time.perf_counter()
    load_before = load_avg()

    import torch

    from gsrm.backends import BackendError, TransformersBackend

    options: dict[str, Any] = {"stop_repeats": args.stop_repeats}
    backend = TransformersBackend(
        model=args.model,
        adapter=args.adapter,
        dtype=args.dtype,
        device=args.device,
        threads=args.threads,
        batch_size=max(batch_sizes),
        max_new_tokens=args.max_new_tokens,
        **options,
    )
    t0 = time.perf_counter()
    try:
        backend.load()
    except BackendError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    load_s = time.perf_counter() - t0
    rss_loaded = peak_rss_mib()

    traces, source = load_traces(
        Path(args.data), args.tokens, max(batch_sizes), backend.count_tokens
    )
    distinct = len(traces)
    items = [traces[i % distinct] for i in range(max(batch_sizes))]
    convs = [backend.fit(p, r)[0] for p, r in items]  # what decompose_many sends
    prompt_ids = [backend._prompt_ids(c) for c in convs]
    prompt_tokens = [len(p) for p in prompt_ids]
    trace_tokens = [backend.count_tokens(r) for _, r in items]

    tok = backend._tok
    eos_cfg = backend._model.generation_config.eos_token_id
    eos = set(eos_cfg if isinstance(eos_cfg, list) else [eos_cfg]) | {tok.eos_token_id}
    inst = Instrument(backend._model)
    log = functools.partial(print, file=sys.stderr, flush=True)

    def once(n: int, label: str, lookup: int, r: int) -> Run:
        backend.prompt_lookup = lookup
        try:
            run = timed(backend, inst, convs[:n], args.max_new_tokens, eos)
        finally:
            backend.prompt_lookup = 0
        log(
            f"{label} run {r + 1}/{args.repeats}: {run.wall_s:.2f}s "
            f"{run.tokens} tok ({run.tokens_per_s:.2f} tok/s, prefill {run.prefill_s:.2f}s)"
        )
        return run

    result: dict[str, Any] = {
        "benchmark": "decode",
        "backend": "transformers",
        "model": backend.model_id,
        "dtype": args.dtype,
        "device": backend.device,
        "gpu": torch.cuda.get_device_name() if backend.device.startswith("cuda") else None,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "load_s": round(load_s, 2),
        "quick": args.quick,
        "repeats": args.repeats,
        "max_new_tokens": args.max_new_tokens,
        "stop_repeats": options.get("stop_repeats"),
        "trace": {
            "source": source,
            "distinct_traces": distinct,
            "tokens": trace_tokens[0],
            "tokens_all": trace_tokens,
            "prompt_tokens": prompt_tokens[0],
            "prompt_tokens_all": prompt_tokens,
            # system prompt + few-shot turns: identical in every prompt, re-prefilled every time
            "shared_prefix_tokens": common_prefix(prompt_ids),
        },
    }
    try:
        # warm up once (allocator, oneDNN kernels, lazy imports) before anything is timed; a
        # warm-up per configuration would re-pay the batch's whole prefill for nothing
        backend.generate(convs[:1], min(8, args.max_new_tokens))
        # round-robin: every repeat runs every configuration once, so a change in the
        # machine's load during the run hits all configurations alike instead of one of them
        configs = [(f"batch {n}", n, 0) for n in batch_sizes]
        configs += [(f"prompt_lookup={k}", 1, k) for k in args.lookup]
        runs: dict[str, list[Run]] = {label: [] for label, _, _ in configs}
        for r in range(args.repeats):
            for label, n, k in configs:
                runs[label].append(once(n, label, k, r))
        batch = {str(n): summarize(runs[f"batch {n}"]) for n in batch_sizes}
        base_runs = runs["batch 1"]
        result["batch"] = batch
        top = str(max(batch_sizes))
        b1 = batch["1"]
        ratio = batch[top]["tokens_per_s"] / b1["tokens_per_s"] if b1["tokens_per_s"] else 0.0
        ratio_dec = (
            batch[top]["decode_tokens_per_s"] / b1["decode_tokens_per_s"]
            if b1["decode_tokens_per_s"]
            else 0.0
        )
        result["batch_speedup"] = {
            "batch": int(top),
            "tokens_per_s_ratio": round(ratio, 3),
            "decode_only_ratio": round(ratio_dec, 3),
        }

        lookup: dict[str, Any] = {}
        greedy_texts = base_runs[0].texts
        for n in args.lookup:
            lruns = runs[f"prompt_lookup={n}"]
            s = summarize(lruns)
            s["identical"] = all(r.texts == greedy_texts for r in lruns)
            s["speedup"] = round(s["tokens_per_s"] / b1["tokens_per_s"], 3)
            s["decode_speedup"] = round(s["decode_tokens_per_s"] / b1["decode_tokens_per_s"], 3)
            lookup[str(n)] = s
        result["prompt_lookup"] = lookup
    except BackendError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        inst.close()

    best = max((v["speedup"] for v in lookup.values()), default=None)
    result["targets_met"] = {
        f"batch{top}_over_batch1_ge_{BATCH_TARGET:g}x": ratio >= BATCH_TARGET,
        f"prompt_lookup_ge_{LOOKUP_TARGET:g}x": best is not None and best >= LOOKUP_TARGET,
        "prompt_lookup_identical": bool(lookup) and all(v["identical"] for v in lookup.values()),
    }
    result["peak_rss_mib"] = peak_rss_mib()
    result["rss_after_load_mib"] = rss_loaded
    result["load_avg_before_after"] = [load_before, load_avg()]
    result["total_s"] = round(time.perf_counter() - started, 1)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
