"""``gsrm-eval``: run the evaluation suite, or compare two of its results.

Why a thin layer: argument parsing only; the work is ``eval.runner.run`` and the files are
``eval.report.write_outputs``, which tests and notebooks call directly.

Exit codes: 0 success; 2 bad input (unknown task/system/judge, unreadable metrics file);
1 a model or judge failed during the run (the report is still written, with the error).

Examples::

    gsrm-eval list
    gsrm-eval run --tasks gsm8k-socratic,reward-sanity --systems newline,cue-sentences \\
        --judges lexical --out runs/eval --limit 50
    gsrm-eval run --out runs/eval-full          # every task, system and default judge
    gsrm-eval compare runs/a/metrics.json runs/b/metrics.json
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence


def _names(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


def build_parser() -> argparse.ArgumentParser:
    from eval.runner import RunConfig
    from gsrm.backends.openvino import add_openvino_args
    from gsrm.describe import add_prefix_warmup_arg
    from gsrm.validation import (
        GenBatchSize,
        MaxInputTokens,
        MaxNewTokens,
        PromptLookup,
        Threads,
        arg_type,
    )

    defaults = RunConfig()
    p = argparse.ArgumentParser(prog="gsrm-eval", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)

    r = sub.add_parser("run", help="evaluate tasks x systems (x judges), write metrics/report")
    r.add_argument("--tasks", type=_names, default=defaults.tasks, metavar="A,B",
                   help="comma-separated task names (default: all; see `gsrm-eval list`)")
    r.add_argument("--systems", type=_names, default=defaults.systems, metavar="A,B",
                   help="comma-separated systems (default: all)")
    r.add_argument("--judges", type=_names, default=defaults.judges, metavar="A,B",
                   help="judges for reward tasks: lexical, embedding, llm (default: %(default)s)")
    r.add_argument("--out", required=True, help="output folder (metrics.json, report.md, plots/)")
    r.add_argument("--limit", type=int, default=None, help="at most N items per task")
    r.add_argument("--seed", type=int, default=0, help="seed for the reward-sanity students")
    r.add_argument("--data", default="", help="data root (default: $GSRM_DATA or ../shared/data)")
    r.add_argument("--cache", default=None,
                   help="decomposition cache file (default: OUT/decompositions.jsonl)")
    r.add_argument("--annotated", default=None,
                   help="annotated corpus for annotated-jsonl (default: the bundled sample)")
    r.add_argument("--split", default="test", choices=["test", "dev"],
                   help="test: report (default); dev: the split to choose rules, thresholds "
                        "and data mixes on (eval/splits.py)")
    r.add_argument("--schoenfeld", default=None,
                   help="a checkout of MingLiiii/Schoenfeld_Reasoning for schoenfeld-r1 "
                        "(default: $GSRM_SCHOENFELD; the task is skipped without one)")
    r.add_argument("--char-tolerance", type=int, default=defaults.char_tolerance,
                   help="boundary tolerance in characters (default: %(default)s)")
    r.add_argument("--sent-tolerance", type=int, default=defaults.sent_tolerance,
                   help="boundary tolerance in sentences (default: %(default)s)")
    r.add_argument("--judge-url", default=None, help="OpenAI-compatible /v1 URL for the llm judge")
    r.add_argument("--judge-model", default="default", help="model name for the llm judge")
    g = r.add_argument_group("model systems (smollm2-fewshot, gsrm-ft)")
    g.add_argument("--model", default=None, help="HF model folder or hub id (default: embedded)")
    g.add_argument("--adapter", default=None,
                   help="LoRA adapter folder for gsrm-ft (default: $GSRM_ADAPTER)")
    g.add_argument("--batch-size", type=arg_type(GenBatchSize, "--batch-size"), default=64,
                   help="rows decoded together (continuous batching; default: %(default)s)")
    g.add_argument("--prompt-lookup", type=arg_type(PromptLookup, "--prompt-lookup"), default=0,
                   help="prompt-lookup speculation n-gram size (0 = off; runs at batch 1)")
    g.add_argument("--max-new-tokens", type=arg_type(MaxNewTokens, "--max-new-tokens"),
                   default=None,
                   help="override every task's generation budget")
    g.add_argument("--max-input-tokens", type=arg_type(MaxInputTokens, "--max-input-tokens"),
                   default=6144, help="prompt limit")
    g.add_argument("--threads", type=arg_type(Threads, "--threads"), default=None,
                   help="torch threads")
    g.add_argument("--engine", default=None, choices=["transformers", "openvino"],
                   help="LM backend of the model systems (default: openvino, OpenVINO GenAI "
                        "on a GGUF export made on first use; transformers when $GSRM_DEVICE "
                        "names a GPU)")
    add_openvino_args(g)
    add_prefix_warmup_arg(g)
    g.add_argument("--dtype", default="float32", choices=["float32", "auto", "bfloat16"],
                   help="float32 (default): a trace's decomposition does not depend on what "
                        "else is in the batch; bfloat16 (or auto: bfloat16 where the CPU/GPU "
                        "runs it natively) is ~2.4x faster on a CPU with AMX, but its outputs "
                        "shift with the batch")
    r.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    r.add_argument("--no-progress", action="store_true", help="no progress bars")

    c = sub.add_parser("compare", help="print the metric differences between two runs")
    c.add_argument("a", help="metrics.json of run A")
    c.add_argument("b", help="metrics.json of run B")
    c.add_argument("--all", action="store_true", help="also list unchanged metrics")

    sub.add_parser("list", help="list tasks, systems, judges and metrics")
    return p


def _dtype(name: str) -> str:
    """Resolve ``auto`` here, so metrics.json records the dtype that actually ran."""
    from gsrm.backends.transformers import resolve_dtype

    try:
        return resolve_dtype(name)
    except ImportError:  # no torch: only the rule baselines can run anyway
        return "float32" if name == "auto" else name


def _cmd_run(args: argparse.Namespace) -> int:
    from eval.report import write_outputs
    from eval.runner import RunConfig, run, validate
    from eval.systems import SystemOptions
    from gsrm.backends import default_backend

    cfg = RunConfig(
        tasks=args.tasks, systems=args.systems, judges=args.judges, limit=args.limit,
        seed=args.seed, data=args.data, out=args.out, cache=args.cache,
        annotated=args.annotated, split=args.split, schoenfeld=args.schoenfeld,
        char_tolerance=args.char_tolerance,
        sent_tolerance=args.sent_tolerance, judge_url=args.judge_url,
        judge_model=args.judge_model, max_new_tokens=args.max_new_tokens,
        system_options=SystemOptions(
            model=args.model, adapter=args.adapter, batch_size=args.batch_size,
            prompt_lookup=args.prompt_lookup, dtype=_dtype(args.dtype),
            max_input_tokens=args.max_input_tokens, threads=args.threads,
            engine=args.engine or default_backend(), ov_weights=args.ov_weights,
            ov_precision=args.ov_precision, ov_kv_cache_gb=args.ov_kv_cache_gb,
            prefix_warmup=args.prefix_warmup),
    )
    validate(cfg)
    details: list[dict] = []
    report, stats = run(cfg, progress=not args.no_progress, details_sink=details)
    paths = write_outputs(args.out, report, stats, details, plots=not args.no_plots)
    for e in report.errors:
        print(f"gsrm-eval: error: {e}", file=sys.stderr)
    print(f"gsrm-eval: wrote {paths['report']} and {paths['metrics']} "
          f"in {stats.total_seconds:.1f} s", file=sys.stderr)
    return 1 if report.errors else 0


def _cmd_compare(args: argparse.Namespace) -> int:
    from eval.report import compare_reports, format_diffs, load_report

    a, b = load_report(args.a), load_report(args.b)
    sys.stdout.write(format_diffs(compare_reports(a, b, show_all=args.all)))
    return 0


def _cmd_list() -> int:
    from eval.metrics import METRICS
    from eval.systems import SYSTEMS
    from eval.tasks import TASKS
    from gsrm.judges import JUDGES

    print("tasks:")
    for name, factory in TASKS.items():
        t = factory()
        print(f"  {name:<20} {t.kind:<13} {t.description}")
    print("systems:")
    for name, spec in SYSTEMS.items():
        print(f"  {name:<20} {spec.kind:<13} {spec.description}")
    print("judges:\n  " + ", ".join(JUDGES))
    print("metrics:")
    for name, m in METRICS.items():
        print(f"  {name:<20} {m.doc}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``gsrm-eval``; returns the process exit code."""
    from eval.runner import UsageError

    args = build_parser().parse_args(argv)
    try:
        if args.command == "run":
            return _cmd_run(args)
        if args.command == "compare":
            return _cmd_compare(args)
        return _cmd_list()
    except UsageError as exc:  # unknown names, unreadable metrics files
        print(f"gsrm-eval: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
