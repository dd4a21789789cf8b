"""Decomposition throughput of the GSRM (traces/s) per trace set, as JSON lines.

Why: in RLKD every student completion is decomposed, so traces per second of
``GSRM.decompose_many`` (the call the reward makes, with the default backend, adapter and
decoding safeguards) bounds a GRPO step. Short GSM8K-like traces and long branching traces
(thousands of characters, DESIGN.md section 7) stress it differently: many short generations
batch well; long ones are bounded by sequential decoding steps.

The GSRM decomposes as it does by default: two-stage (``--decomposer``), i.e. the trained
segmenter (``gsrm.segment``) cuts each trace into step spans, then the LM describes every span
of every trace in one batch (``gsrm.describe``); ``--decomposer single-pass`` times the LM
writing whole decompositions instead. The JSON says which ran (``decomposer``, with the
segmenter's identity). Each set is decomposed as one ``decompose_many`` call (the backend
batches the generations by ``--batch-size``) after one untimed warm-up decomposition of a trace
outside the sets; the traces are distinct, so nothing is served from the GSRM's content cache.
Reported per set: traces/s, completion tokens/s, steps per trace, how decodes ended
(``hit_max_new_tokens``, loops stopped, resumed), and ``segment_s``, the segmenter's own time
over the set, measured again after the timed call (its share of ``wall_s``). A JSON line is printed after each set, the last one with
``"complete": true``, so a run cut short by a timeout still reports the sets it finished.

``--breakdown`` times the parts instead, on each set's own span prompts (``breakdown``): the
segmenter, the prefix warm-up, prefilling every distinct span prompt (a one-token generation
on a cold cache) and decoding them to the describer's budget (prompts now cached, so on
``openvino`` this is the decoding alone). It replaces the timed call, whose prompts would
otherwise be in the cache already. It also counts, where the engine's prefix cache is paged
(``openvino``), the prompt tokens each span prompt shares with its problem's others and, of
those, the ones past the last full KV block (``prefix_tokens_past_block``): the cache keeps
whole blocks, so these are prefilled again for every span; and the tokens in whole blocks an
earlier prompt holds with all before them (``block_cached_tokens``, ``block_hits``), which
counts sharing past the problem too (steps that begin alike).

Trace files are JSON lines ``{"problem", "reasoning"}`` (``gpu/synth.py`` writes GSM8K-like and
long ones); without ``--traces`` the repository's own examples are used.

Example::

    $ python benchmarks/decompose.py --limit 2 --max-new-tokens 64
    $ python benchmarks/decompose.py --traces gsm8k=/tmp/d/traces/gsm8k.jsonl \\
          --traces long=/tmp/d/traces/long.jsonl --limit 128 --device cuda --dtype bfloat16 \\
          --batch-size 128
    $ python benchmarks/decompose.py --backend openvino --ov-weights f16 --batch-size 32 \\
          --traces gsm8k=/tmp/gsm8k.jsonl --limit 64 --threads 2
    $ python benchmarks/decompose.py --breakdown --batch-size 32 --threads 2 \\
          --traces gsm8k=/tmp/gsm8k.jsonl --limit 64
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from anywhere: import the checkout's gsrm
    sys.path.insert(0, str(ROOT))

from benchmarks.decode import peak_rss_mib  # after the path set-up above

Item = tuple[str, str]  # (problem, reasoning)


def read_traces(path: Path, limit: int | None) -> list[Item]:
    """(problem, reasoning) pairs from a JSON-lines file, the first ``limit`` of them."""
    items: list[Item] = []
    with path.open(encoding="utf-8") as fh:
        for n, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            obj = json.loads(line)
            if not obj.get("problem") or not obj.get("reasoning"):
                raise ValueError(f"{path}:{n}: needs non-empty 'problem' and 'reasoning'")
            items.append((obj["problem"], obj["reasoning"]))
            if limit is not None and len(items) >= limit:
                break
    if not items:
        raise ValueError(f"{path}: no traces")
    return items


def repo_traces() -> list[Item]:
    """The raw-text traces shipped in the repository (examples/ and eval's sample)."""
    items: list[Item] = []
    for name in ("teacher.json", "student_aligned.json", "student_misaligned.json"):
        obj = json.loads((ROOT / "examples" / name).read_text(encoding="utf-8"))
        items.append((obj["problem"], obj["reasoning"]))
    sample = ROOT / "eval" / "data" / "annotated_sample.jsonl"
    if sample.is_file():
        items += read_traces(sample, None)
    return items


def parse_set(spec: str) -> tuple[str, Path]:
    """``name=path`` from the command line.

    >>> parse_set("long=/tmp/long.jsonl")
    ('long', PosixPath('/tmp/long.jsonl'))
    """
    name, sep, path = spec.partition("=")
    if not sep or not name or not path:
        raise argparse.ArgumentTypeError(f"--traces wants NAME=FILE, got {spec!r}")
    return name, Path(path)


def measure(gsrm: Any, items: Sequence[Item]) -> dict[str, Any]:
    """Time one ``decompose_many`` over ``items`` and describe what came out."""
    t0 = time.perf_counter()
    structures = gsrm.decompose_many(list(items))
    wall = time.perf_counter() - t0
    gens = [s.generation for s in structures]
    tokens = sum(g.completion_tokens for g in gens if g is not None)
    steps = [len(s.steps) for s in structures]
    return {
        "traces": len(items),
        "wall_s": round(wall, 3),
        "traces_per_s": round(len(items) / wall, 3) if wall > 0 else None,
        "completion_tokens": tokens,
        "completion_tokens_per_s": round(tokens / wall, 1) if wall > 0 else None,
        "mean_trace_chars": round(statistics.mean(len(r) for _, r in items)),
        "mean_steps": round(statistics.mean(steps), 2),
        "min_steps": min(steps),
        "hit_max_new_tokens": sum(bool(g and g.hit_max_new_tokens) for g in gens),
        "stopped_in_loop": sum(bool(g and g.stopped_in_loop) for g in gens),
        "input_truncated": sum(bool(g and g.input_truncated) for g in gens),
    }


def plan_prefix(reply: str, headers: Sequence[str]) -> str:
    r"""A reply's own plan line and the next part's header, as a prefilled reply: what is left
    to decode is what a describer that did not write the plan would decode. A reply that does
    not open with a plan gets its format's plan header only (it decodes everything).

    >>> pqa = ("Plan:", "Question:", "Answer:")
    >>> plan_prefix("Plan: Find the eggs.\nQuestion: How many?\nAnswer: 72", pqa)
    'Plan: Find the eggs.\nQuestion:'
    >>> plan_prefix("72", pqa)
    'Plan:'
    """
    first, sep, _ = reply.lstrip().partition("\n")
    if sep and first.startswith(headers[0]):
        return f"{first}\n{headers[1]}"
    return headers[0]


def common_prefix(ids: Sequence[Sequence[int]]) -> int:
    """Length of the longest common prefix of token-id lists (0 for none).

    >>> common_prefix([[1, 2, 3], [1, 2, 4], [1, 2]])
    2
    >>> common_prefix([])
    0
    """
    if not ids:
        return 0
    n = 0
    while all(len(i) > n for i in ids) and len({i[n] for i in ids}) == 1:
        n += 1
    return n


def prefix_past_block(ids: Sequence[Sequence[int]], problems: Sequence[str],
                      block: int) -> tuple[int, int]:
    """``(shared, past_block)`` over the span prompts ``ids`` of ``problems``: the tokens each
    prompt shares with every other prompt of its problem (what a prefix cache can serve; 0
    for a problem with one prompt), and of those the ones past the shared prefix's last full
    ``block``: a prefix cache that keeps whole blocks computes them again for every prompt.
    Problems are grouped as the span prompts write them, stripped (``SpanFormat.messages``,
    and ``gsrm.describe.warm_prefixes``'s key). Pure.

    >>> prefix_past_block([[1, 2, 3, 4, 5], [1, 2, 3, 9], [7, 8]], ["p", "p", "q"], 2)
    (6, 2)
    """
    groups: dict[str, list[Sequence[int]]] = {}
    for p, i in zip(problems, ids, strict=True):
        groups.setdefault(p.strip(), []).append(i)
    shared = past = 0
    for group in groups.values():
        if len(group) < 2:
            continue
        n = common_prefix(group)
        shared += n * len(group)
        past += n % block * len(group)
    return shared, past


def block_hits(ids: Sequence[Sequence[int]], block: int) -> int:
    """Prompt tokens in whole ``block``-token blocks that an earlier prompt of ``ids`` holds
    with everything before them: what a block-granular prefix cache can serve when every
    earlier prompt's blocks are still cached (an upper bound: the engine shares a block only
    once a step has computed it). Why: besides their problem's prefix, prompts can share the
    first tokens of a step (two students' sentences that differ only at their ends), and that
    sharing is the engine's, not the describer's work. Pure.

    >>> block_hits([[1, 2, 3, 4, 5], [1, 2, 3, 4, 9], [1, 2, 7, 4], [5, 6]], 2)
    6
    """
    seen: set[int] = set()
    hits = 0
    for prompt in ids:
        chain, mine = 0, []
        for k in range(len(prompt) // block):
            chain = hash((chain, tuple(prompt[k * block:(k + 1) * block])))
            mine.append(chain)
        hits += block * sum(1 for c in mine if c in seen)  # a chain: a miss ends the hits
        seen.update(mine)
    return hits


def breakdown(gsrm: Any, items: Sequence[Item], plan_cost: bool = False) -> dict[str, Any]:
    """Where a two-stage decomposition's time goes, on ``items``' own span prompts
    (``gsrm.describe.span_prompts``): segmenting, the prefix warm-up (when the backend does
    it), prefilling every distinct span prompt (a one-token generation, cold: run it on
    traces the engine has not seen) and then decoding them to the describer's budget. With a
    prefix cache (``openvino``) the decode round finds its prompts cached, so ``decode_s`` is
    the decoding; without one (``transformers``) it prefills again (``decode_includes_prefill``).
    The format repair and the retry of ``describe_many`` are not timed here (the regular run
    counts how often they fire).

    ``plan_cost``: one more round, each prompt with its decoded reply's plan line prefilled
    (``plan_prefix``), so only the sub-problem and answer decode (``decode_after_plan_s``,
    ``completion_tokens_after_plan``). Why: every plan the describers were trained on is
    their question reworded (README, "What the plan line carries"); this measures what not
    decoding it would save. The plan's text is prefilled in that round (a cost a describer
    without it would not have), so the saving it shows is a lower bound."""
    from gsrm.describe import span_prompts, warm_prefixes
    from gsrm.spanformat import get_span_format

    if not gsrm.two_stage:
        raise ValueError("--breakdown times the two-stage decomposer only")
    backend = gsrm.backend
    fmt = get_span_format(backend.span_format)
    if plan_cost and fmt.derives_meta:
        raise ValueError(f"--plan-cost: the {fmt.name!r} describer writes no plan line "
                         "(its plan is derived from the question)")
    budget = gsrm.describe_max_new_tokens
    t0 = time.perf_counter()
    spans = gsrm.segmenter.segment_many([r for _, r in items])
    t1 = time.perf_counter()
    convs, problems, where = span_prompts(
        fmt, backend.shots, [(p, r, s) for (p, r), s in zip(items, spans, strict=True)])
    if backend.prefix_warmup:
        warm_prefixes(backend, convs, problems)
    t2 = time.perf_counter()
    first = backend.generate(convs, 1, stop=fmt.stop)
    t3 = time.perf_counter()
    gens = backend.generate(convs, budget, stop=fmt.stop)
    t4 = time.perf_counter()
    tokens = sum(g.completion_tokens for g in gens)
    extra: dict[str, Any] = {}
    if plan_cost:
        prefilled = [[*c, {"role": "assistant", "content": plan_prefix(g.text, fmt.headers)}]
                     for c, g in zip(convs, gens, strict=True)]
        t5 = time.perf_counter()
        rest = backend.generate(prefilled, budget, stop=fmt.stop)
        extra = {"decode_after_plan_s": round(time.perf_counter() - t5, 3),
                 "completion_tokens_after_plan": sum(g.completion_tokens for g in rest)}
    block = getattr(backend, "kv_block_tokens", None)  # a paged prefix cache: openvino
    ids = [backend._prompt_ids(c) for c in convs] if block else []
    shared, past = prefix_past_block(ids, problems, block) if block else (None, None)
    return {
        "traces": len(items),
        "spans": len(where),
        "distinct_prompts": len(convs),
        "prompt_tokens": sum(g.prompt_tokens for g in first),
        # of those, shared by every prompt of their problem, and of these the tokens past
        # the last full KV block, prefilled again for every prompt (None: no paged cache)
        "shared_prefix_tokens": shared,
        "prefix_tokens_past_block": past,
        # tokens in whole blocks an earlier prompt holds (its problem's and any more)
        "block_cached_tokens": block_hits(ids, block) if block else None,
        "kv_block_tokens": block,
        "completion_tokens": tokens,
        "describe_max_new_tokens": budget,
        "hit_max_new_tokens": sum(g.hit_max_new_tokens for g in gens),
        "segment_s": round(t1 - t0, 3),
        "warmup_s": round(t2 - t1, 3),
        "prefill_s": round(t3 - t2, 3),
        "decode_s": round(t4 - t3, 3),
        "decode_tokens_per_s": round(tokens / (t4 - t3), 1) if t4 > t3 else None,
        "decode_includes_prefill": backend.name != "openvino",
        **extra,
    }


def build_parser() -> argparse.ArgumentParser:
    from gsrm.backends.openvino import add_early_stop_arg, add_openvino_args
    from gsrm.describe import add_prefix_warmup_arg

    p = argparse.ArgumentParser(
        prog="python benchmarks/decompose.py",
        description="GSRM decomposition throughput (traces/s) per trace set (JSON lines).",
    )
    p.add_argument("--traces", type=parse_set, action="append", default=[],
                   help="NAME=FILE, a JSON-lines set of {problem, reasoning} (repeatable; "
                        "default: the repository's examples as one set 'repo')")
    p.add_argument("--limit", type=int, default=None, help="traces per set (default: all)")
    p.add_argument("--model", default=None, help="model folder (default: embedded SmolLM2)")
    p.add_argument("--adapter", default="auto",
                   help="peft LoRA folder, 'none', or 'auto' (the shipped default adapter)")
    p.add_argument("--device", default=None,
                   help="torch device, e.g. cuda (default: $GSRM_DEVICE, else cpu)")
    p.add_argument("--dtype", default="float32", help="torch dtype name (default: %(default)s)")
    p.add_argument("--batch-size", type=int, default=8, help="generation batch (default: 8)")
    p.add_argument("--max-new-tokens", type=int, default=1024,
                   help="single-pass: token budget per decomposition; the backend's cap "
                        "(default: %(default)s)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--decomposer", choices=("two-stage", "single-pass"), default="two-stage",
                   help="the GSRM's decomposer (default: %(default)s, the GSRM's default: the "
                        "trained segmenter finds the step spans, the LM describes each)")
    p.add_argument("--describe-max-new-tokens", type=int, default=None,
                   help="two-stage: token budget per span (default: the GSRM's, "
                        "gsrm.describe.DESCRIBE_MAX_NEW_TOKENS)")
    add_prefix_warmup_arg(p)
    p.add_argument("--backend", choices=("transformers", "openvino"), default="openvino",
                   help="the LM engine (openvino: OpenVINO GenAI on the GGUF export made on "
                        "first use; default: %(default)s, the CPU default)")
    add_openvino_args(p)
    add_early_stop_arg(p)
    p.add_argument("--breakdown", action="store_true",
                   help="instead of timing decompose_many, time its parts on each set's span "
                        "prompts: segment, prefix warm-up, prefill, decode (two-stage only)")
    p.add_argument("--plan-cost", action="store_true",
                   help="with --breakdown: decode once more with each reply's plan line "
                        "prefilled, to time what not decoding the plan would save")
    return p



def decomposer_info(gsrm: Any) -> dict[str, Any]:
    """Which decomposer the GSRM runs (two-stage only with an LM backend that describes spans),
    with the segmenter's identity (name, weights hash, threshold) and where it runs."""
    if not gsrm.two_stage:
        return {"decomposer": "single-pass"}
    seg = gsrm.segmenter
    return {"decomposer": "two-stage", "segmenter": seg.identity(),
            "segmenter_device": getattr(seg, "device", None),
            "describe_max_new_tokens": gsrm.describe_max_new_tokens}


def segment_seconds(gsrm: Any, items: Sequence[Item]) -> float | None:
    """Seconds the segmenter alone takes over ``items`` (two-stage; its share of the wall)."""
    if not gsrm.two_stage:
        return None
    t0 = time.perf_counter()
    gsrm.segmenter.segment_many([r for _, r in items])
    return round(time.perf_counter() - t0, 3)


def main(argv: Sequence[str] | None = None) -> int:
    """Run and print one JSON line; 2 on bad arguments or trace files, 1 if the model fails."""
    args = build_parser().parse_args(argv)
    if (args.limit is not None and args.limit < 1) or args.batch_size < 1 \
            or args.max_new_tokens < 2 or (args.describe_max_new_tokens or 2) < 2:
        print("error: --limit >= 1, --batch-size >= 1, --max-new-tokens >= 2, "
              "--describe-max-new-tokens >= 2", file=sys.stderr)
        return 2
    if args.breakdown and args.decomposer != "two-stage":
        print("error: --breakdown times the two-stage decomposer only", file=sys.stderr)
        return 2
    if args.plan_cost and not args.breakdown:
        print("error: --plan-cost is a round of --breakdown", file=sys.stderr)
        return 2
    try:
        sets = {name: read_traces(path, args.limit) for name, path in args.traces} or {
            "repo": repo_traces()[: args.limit]}
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    started = time.perf_counter()

    import torch

    from gsrm.backends import BackendError, OpenVINOBackend, TransformersBackend
    from gsrm.judges import get_judge
    from gsrm.model import GSRM

    backend: Any
    if args.backend == "openvino":
        backend = OpenVINOBackend(model=args.model, adapter=args.adapter, weights=args.ov_weights,
                                  precision=args.ov_precision, batch_size=args.batch_size,
                                  max_new_tokens=args.max_new_tokens, threads=args.threads,
                                  early_stop=args.ov_early_stop, kv_cache_gb=args.ov_kv_cache_gb)
    else:
        backend = TransformersBackend(model=args.model, adapter=args.adapter, device=args.device,
                                      dtype=args.dtype, batch_size=args.batch_size,
                                      max_new_tokens=args.max_new_tokens, threads=args.threads)
    if args.prefix_warmup is not None:
        backend.prefix_warmup = args.prefix_warmup
    gsrm = GSRM(backend=backend, judge=get_judge("lexical"), decomposer=args.decomposer,
                describe_max_new_tokens=args.describe_max_new_tokens)
    result: dict[str, Any] = {
        "benchmark": "decompose",
        **decomposer_info(gsrm),
        "backend": backend.name,
        "model": backend.model_id,
        "device": getattr(backend, "device", "cpu"),
        "gpu": torch.cuda.get_device_name()
        if getattr(backend, "device", "cpu").startswith("cuda") else None,
        "dtype": args.dtype if args.backend == "transformers"
        else f"weights {args.ov_weights}, precision {args.ov_precision}",
        "batch_size": args.batch_size,
        "kv_cache_gb": getattr(backend, "kv_cache_gb", None),
        "prefix_warmup": backend.prefix_warmup,
        "early_stop": getattr(backend, "early_stop", None),
        "max_new_tokens": args.max_new_tokens,
        "torch": torch.__version__,
        "cpu_count": os.cpu_count(),
    }
    try:
        t0 = time.perf_counter()
        backend.load()
        result["load_s"] = round(time.perf_counter() - t0, 2)
        # warm-up outside the timed sets (CUDA context, kernels, lazy imports): a short trace
        # that no set contains, so the content cache cannot serve a timed one
        gsrm.decompose_many([("Warm-up: what is 2+3?", "Adding 2 and 3 gives 5. So 5.")])
        result["sets"] = {}
        for name, items in sets.items():
            print(f"decomposing {len(items)} traces of set {name!r}", file=sys.stderr,
                  flush=True)
            if args.breakdown:
                result["sets"][name] = breakdown(gsrm, items, plan_cost=args.plan_cost)
            else:
                result["sets"][name] = measure(gsrm, items)
                result["sets"][name]["segment_s"] = segment_seconds(gsrm, items)
            result["peak_rss_mib"] = peak_rss_mib()
            result["total_s"] = round(time.perf_counter() - started, 1)
            result["complete"] = len(result["sets"]) == len(sets)
            # a line after each set: a run stopped by a timeout still reports the sets done
            print(json.dumps(result), flush=True)
    except BackendError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
