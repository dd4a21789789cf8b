"""``gsrm`` command line: score a student against a teacher, or decompose a trace.

Why a thin layer: the CLI only parses arguments and files and prints JSON; decomposition and
scoring are ``gsrm.model.GSRM`` calls, the same ones the server and the RL client make.

Exit codes: 0 success; 2 bad input (missing file, bad JSON, missing/empty field, text that is
not valid Unicode: one line on stderr naming the file, line and field; a flag out of range,
e.g. ``--max-new-tokens 0``: argparse's usage and error); 1 a model or judge failure (one line
on stderr). The input rules are ``gsrm.validation``'s, the server's too.

Examples::

    gsrm score examples/teacher_steps.json examples/student_aligned_steps.json --judge lexical
    gsrm score examples/teacher.json examples/student_aligned.json        # default model
    gsrm score --jsonl examples/pairs.jsonl
    gsrm decompose examples/teacher.json
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from gsrm.align import SCORE_MODES
from gsrm.backends import BACKENDS, default_backend
from gsrm.backends.openvino import KV_CACHE_GB, add_openvino_args
from gsrm.describe import add_prefix_warmup_arg
from gsrm.io import (
    InputError,
    iter_jsonl,
    load_pairs,
    load_trace,
    trace_from_obj,
    write_text_atomic,
)
from gsrm.judges import DEFAULT_JUDGE, JUDGES
from gsrm.readonly import DESCRIBE_STEPS
from gsrm.spanformat import SPAN_FORMAT_CHOICES
from gsrm.validation import (
    GenBatchSize,
    MaxInputTokens,
    MaxNewTokens,
    PromptLookup,
    Threads,
    arg_type,
)
from gsrm.weights import DEFAULT_ADAPTER, SINGLE_PASS_ADAPTER, shipped_adapters


def _model_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("decomposition model")
    g.add_argument("--backend", default=None, choices=sorted(BACKENDS),
                   help="decomposition generator (default: openvino on the CPU, transformers "
                        "when --device/$GSRM_DEVICE names another torch device)")
    g.add_argument("--model", default=None,
                   help="HF model folder or hub id (transformers/vllm), or the served model name "
                        "(openai); default: the embedded SmolLM2-135M-Instruct")
    g.add_argument("--adapter", default="auto",
                   help="peft LoRA adapter folder, a shipped adapter name ("
                        f"{', '.join(shipped_adapters())}), or 'none' for the plain base "
                        f"model; default 'auto': {DEFAULT_ADAPTER} (two-stage) or "
                        f"{SINGLE_PASS_ADAPTER} (single-pass) on the embedded base model")
    g.add_argument("--base-url", default=None, help="OpenAI-compatible /v1 URL (openai backend)")
    g.add_argument("--span-format", default="tags", choices=SPAN_FORMAT_CHOICES,
                   help="openai: the describer format the served model was trained on (the "
                        "local backends read it from their adapter; describer-qa: qa, "
                        "describer-pqa-brief: pqa, describer: tags); 'auto': the shipped "
                        "default describer's (serve it merged with --shots 0); default: "
                        "%(default)s, the canonical format")
    g.add_argument("--api-key", default=None, help="API key for --base-url (default: EMPTY)")
    g.add_argument("--max-new-tokens", type=arg_type(MaxNewTokens, "--max-new-tokens"),
                   default=1024,
                   help="generation limit per decomposition; hitting it is flagged")
    g.add_argument("--max-input-tokens", type=arg_type(MaxInputTokens, "--max-input-tokens"),
                   default=6144,
                   help="prompt limit; longer reasoning is cut at the end and flagged")
    g.add_argument("--shots", default=None,
                   help="few-shot domains, comma-separated (math,code,science,puzzle), or a "
                        "count; default: none with an adapter, else math,puzzle")
    g.add_argument("--batch-size", type=arg_type(GenBatchSize, "--batch-size"), default=8,
                   help="generation batch (transformers; openvino: at least 32)")
    g.add_argument("--prompt-lookup", type=arg_type(PromptLookup, "--prompt-lookup"), default=0,
                   help="prompt-lookup speculation n-gram size (transformers; 0 = off)")
    g.add_argument("--device", default=None,
                   help="torch device (transformers; default: $GSRM_DEVICE, else cpu)")
    g.add_argument("--threads", type=arg_type(Threads, "--threads"), default=None,
                   help="torch CPU threads (transformers; default: torch's choice). On a CPU "
                        "shared with other busy processes, 1 avoids thread oversubscription")
    g.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    add_openvino_args(g)
    add_prefix_warmup_arg(g)
    g.add_argument("--decomposer", default="two-stage", choices=["two-stage", "single-pass"],
                   help="two-stage (default): the trained segmenter finds the steps, the LM "
                        "describes each; single-pass: the LM writes the whole decomposition "
                        "(large GSRMs behind vllm/openai)")
    g.add_argument("--segmenter", default="trained",
                   help="step segmenter for two-stage: 'trained' (the shipped model), a folder "
                        "of one trained with `gsrm-train segmenter`, or a rule baseline "
                        "('units', 'cues')")
    g.add_argument("--out", default=None, help="write the JSON here (atomically) instead of stdout")


def _shots(value: str | None) -> Any:
    if value is None:
        return None
    if value.strip().isdigit():
        return int(value)
    return tuple(s.strip() for s in value.split(",") if s.strip())


def backend_name(args: argparse.Namespace) -> str:
    """``--backend``, else the default for ``--device`` (``gsrm.backends.default_backend``)."""
    return args.backend or default_backend(args.device)


def backend_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """Keyword arguments for ``gsrm.backends.get_backend`` from parsed CLI flags."""
    if args.backend == "openvino" and (args.device or "cpu").strip().lower() != "cpu":
        raise ValueError(f"--backend openvino runs on the CPU; --device {args.device} needs "
                         "--backend transformers or vllm")
    args.backend = backend_name(args)
    kw: dict[str, Any] = {"max_new_tokens": args.max_new_tokens,
                          "max_input_tokens": args.max_input_tokens}
    shots = _shots(args.shots)
    if shots is not None:
        kw["shots"] = shots
    from gsrm.weights import adapter_for

    adapter = adapter_for(args.adapter, getattr(args, "decomposer", "two-stage"))
    if args.backend == "transformers":
        kw.update(model=args.model, adapter=adapter, device=args.device, dtype=args.dtype,
                  batch_size=args.batch_size, prompt_lookup=args.prompt_lookup,
                  threads=args.threads)
    elif args.backend == "vllm":
        kw.update(model=args.model, adapter=adapter)
    elif args.backend == "openvino":
        kw.update(model=args.model, adapter=adapter, threads=args.threads,
                  weights=getattr(args, "ov_weights", "int8"),
                  precision=getattr(args, "ov_precision", "f32"),
                  kv_cache_gb=getattr(args, "ov_kv_cache_gb", KV_CACHE_GB),
                  batch_size=max(args.batch_size, 32))
        if getattr(args, "prefix_warmup", None) is not None:
            kw["prefix_warmup"] = args.prefix_warmup
    elif args.backend == "openai":
        kw.update(base_url=args.base_url, model=args.model, api_key=args.api_key,
                  span_format=args.span_format)
    return kw


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gsrm", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    sc = sub.add_parser("score", help="structural reward of a student against a teacher")
    sc.add_argument("teacher", nargs="?", help="JSON file: {problem, reasoning | steps}")
    sc.add_argument("student", nargs="?", help="JSON file: {problem, reasoning | steps}")
    sc.add_argument("--jsonl", default=None,
                    help="JSONL of {problem, teacher, student} (each side text or steps)")
    sc.add_argument("--judge", default=DEFAULT_JUDGE, choices=sorted(JUDGES),
                    help="step matcher (default: %(default)s)")
    sc.add_argument("--judge-url", default=None, help="OpenAI-compatible /v1 URL (llm judge)")
    sc.add_argument("--judge-model", default="default", help="model name (llm judge)")
    sc.add_argument("--mode", default="paper", choices=SCORE_MODES,
                    help="paper: unnormalised sum; normalized: divided by teacher steps")
    sc.add_argument("--coverage", action="store_true",
                    help="add the coverage term min(1, n_student/n_teacher)")
    sc.add_argument("--describe-steps", default=DESCRIBE_STEPS[0], choices=DESCRIBE_STEPS,
                    help="all: describe every student step; read: only those the reward reads "
                         "(none past the teacher's count or after the first mismatched "
                         "meta-reasoning), faster, the same reward (default: %(default)s)")
    _model_args(sc)

    de = sub.add_parser("decompose", help="rewrite a reasoning trace into steps")
    de.add_argument("trace", nargs="?", help="JSON file: {problem, reasoning}")
    de.add_argument("--jsonl", default=None, help="JSONL of {problem, reasoning}")
    _model_args(de)
    return parser


def _emit(obj: Any, out: str | None, jsonl: bool) -> None:
    if jsonl:
        text = "".join(json.dumps(o, ensure_ascii=False) + "\n" for o in obj)
    else:
        text = json.dumps(obj, indent=2, ensure_ascii=False) + "\n"
    if out:
        write_text_atomic(out, text)
    else:
        sys.stdout.write(text)


def _gsrm(args: argparse.Namespace, judge: bool) -> Any:
    from gsrm.backends import get_backend
    from gsrm.judges import get_judge
    from gsrm.model import GSRM

    jdg = None
    if judge:
        jkw: dict[str, Any] = {}
        if args.judge == "llm":
            jkw = {"base_url": args.judge_url, "model": args.judge_model}
        jdg = get_judge(args.judge, **jkw)
    kw = backend_kwargs(args)  # resolves the default --backend first
    return GSRM(backend=get_backend(args.backend, **kw), judge=jdg,
                mode=getattr(args, "mode", "paper"), use_coverage=getattr(args, "coverage", False),
                describe_steps=getattr(args, "describe_steps", "all"),
                decomposer=args.decomposer, segmenter=segmenter_from_arg(args.segmenter))


def segmenter_from_arg(value: str) -> Any:
    """A segmenter for ``--segmenter``: a registry name, or a trained model's folder."""
    from gsrm.segment import SEGMENTERS, get_segmenter

    if value in SEGMENTERS:
        return get_segmenter(value)
    path = Path(value)
    if not (path / "config.json").is_file():
        raise InputError(value, None, f"not a segmenter name ({sorted(SEGMENTERS)}) nor a "
                                      "folder with config.json")
    return get_segmenter("trained", path=path)


def _cmd_score(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    if args.jsonl:
        if args.teacher or args.student:
            parser.error("give either TEACHER STUDENT files or --jsonl, not both")
        items = load_pairs(args.jsonl)
        results = _gsrm(args, judge=True).score_many(items)
        _emit([r.model_dump(mode="json") for r in results], args.out, jsonl=True)
        return 0
    if not (args.teacher and args.student):
        parser.error("score needs TEACHER and STUDENT files (or --jsonl FILE)")
    teacher, student = load_trace(args.teacher), load_trace(args.student)
    problem = teacher.problem or student.problem
    t_side = teacher.structure if teacher.structure is not None else teacher.reasoning
    s_side = student.structure if student.structure is not None else student.reasoning
    result = _gsrm(args, judge=True).score(problem, t_side, s_side)
    _emit(result.model_dump(mode="json"), args.out, jsonl=False)
    return 0


def _cmd_decompose(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    if args.jsonl:
        traces = [trace_from_obj(o, Path(args.jsonl), n)
                  for n, o in iter_jsonl(args.jsonl)]
    elif args.trace:
        traces = [load_trace(args.trace)]
    else:
        parser.error("decompose needs a TRACE file (or --jsonl FILE)")
    for t in traces:
        if t.reasoning is None:
            raise InputError(args.jsonl or args.trace, "reasoning",
                             "is missing (this trace is already decomposed into steps)")
    structs = _gsrm(args, judge=False).decompose_many([(t.problem, t.reasoning or "") for t in traces])
    dumped = [s.model_dump(mode="json") for s in structs]
    _emit(dumped if args.jsonl else dumped[0], args.out, jsonl=bool(args.jsonl))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``gsrm``; returns the process exit code."""
    from gsrm.backends import BackendError
    from gsrm.judges import JudgeError
    from gsrm.segment import SegmenterError
    from gsrm.weights import WeightsNotFoundError

    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.command == "score":
            return _cmd_score(args, parser)
        return _cmd_decompose(args, parser)
    except InputError as exc:
        print(f"gsrm: error: {exc}", file=sys.stderr)
        return 2
    except (BackendError, JudgeError, SegmenterError, WeightsNotFoundError, ValueError) as exc:
        print(f"gsrm: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
