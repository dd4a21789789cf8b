"""``rlkd-train``: RLKD (GRPO against the GSRM structure reward) and the SFT baseline, via TRL.

Why TRL and no hand-written loop: GRPO's details (group-relative advantages, clipping, KL to
the reference, generation batching, checkpointing) are TRL's ``GRPOTrainer``; this module only
builds the data, the reward functions (``rl_client.rewards``), the LoRA config and the
``GRPOConfig`` from a preset plus command-line overrides.

Subcommands:

- ``grpo --mode rlkd --init <SFT checkpoint>``: the paper's RLKD (student distilled by SFT
  first); ``--mode rlkd-zero``: GRPO from the base student. Rewards are separate TRL reward
  functions (accuracy, format, tag_count, gsrm) weighted by ``GRPOConfig.reward_weights``, so
  TRL logs each one per step (``rewards/<name>/mean``); every log line is also appended to
  ``<output-dir>/metrics.jsonl`` for learning curves. The GSRM runs behind the endpoint
  (``--gsrm http://host:port``, see ``gsrm-serve``) or in-process (``--gsrm local``; on a GPU
  with ``--gsrm-device cuda``). ``--time-budget S`` ends the run cleanly, ``final/`` saved,
  before the step that would end past S seconds (a fixed-length check on a borrowed GPU).
- ``sft``: the baseline: SFT (TRL ``SFTTrainer``, LoRA) on the teacher's reasoning,
  formatted as ``<think>reasoning</think> answer``. Its ``final`` folder is a valid ``--init``.

Data: GSM8K train (``../shared/data/gsm8k/train.jsonl`` by default, read by path): the teacher
reasoning is the reference solution with the ``<<calculator>>`` notes removed.

Presets: ``cpu-tiny`` (two steps, tiny batches: tests and smoke runs), ``cpu`` (a small but
real run on a laptop CPU), ``gpu`` (the paper's settings: 4 generations, lr 5e-5, temperature
0.7, beta 0.04, 4096 completion tokens). Any flag given explicitly overrides the preset.

Example::

    $ gsrm-serve --port 8000 &
    $ rlkd-train sft  --preset cpu --output-dir runs/sft
    $ rlkd-train grpo --preset cpu --mode rlkd --init runs/sft/final --output-dir runs/rlkd
    $ rlkd-train grpo --preset cpu-tiny --mode rlkd-zero --gsrm local \\
          --gsrm-backend sentences --gsrm-judge lexical --output-dir /tmp/rlkd-smoke
    $ rlkd-train grpo ... --resume            # continue from the last checkpoint
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

DEFAULT_DATA = "../shared/data/gsm8k/train.jsonl"
INIT_MARKER = "rlkd_init.json"
"""Written next to an ``--mode rlkd`` adapter: the SFT student it was trained on top of."""

SYSTEM_PROMPT = ("You are a careful math solver. Think step by step inside <think> </think>, "
                 "then write only the final answer after </think>.")

PRESETS: dict[str, dict[str, Any]] = {
    # two optimizer steps on two prompts' worth of short completions: tests, smoke runs
    "cpu-tiny": {"limit": 8, "max_steps": 2, "batch_size": 2, "grad_accum": 1,
                 "num_generations": 2, "max_completion_length": 24, "lr": 5e-5,
                 "temperature": 0.7, "beta": 0.0, "lora_r": 4, "lora_alpha": 8,
                 "save_steps": 2, "logging_steps": 1, "bf16": False, "epochs": 1.0,
                 "max_length": 256},
    # a small real run for a 135M student on a CPU (step time not benchmarked here: with the
    # default transformers GSRM the decompositions of 8 students per step dominate)
    "cpu": {"limit": 2000, "max_steps": 60, "batch_size": 8, "grad_accum": 1,
            "num_generations": 4, "max_completion_length": 160, "lr": 5e-5,
            "temperature": 0.7, "beta": 0.0, "lora_r": 16, "lora_alpha": 32,
            "save_steps": 20, "logging_steps": 1, "bf16": False, "epochs": 1.0,
            "max_length": 512},
    # the paper's GRPO settings (DESIGN.md section 1) on one GPU
    "gpu": {"limit": None, "max_steps": -1, "batch_size": 16, "grad_accum": 1,
            "num_generations": 4, "max_completion_length": 4096, "lr": 5e-5,
            "temperature": 0.7, "beta": 0.04, "lora_r": 64, "lora_alpha": 128,
            "save_steps": 100, "logging_steps": 1, "bf16": True, "epochs": 1.0,
            "max_length": 4096},
}


# --------------------------------------------------------------------------- data
_CALC = re.compile(r"<<[^<>]*>>")


def teacher_from_solution(solution: str) -> tuple[str, str]:
    """(teacher reasoning, final answer) from a GSM8K solution.

    >>> teacher_from_solution("She sold 48/2 = <<48/2=24>>24 in May.\\n#### 72")
    ('She sold 48/2 = 24 in May.', '72')
    """
    body, sep, answer = solution.rpartition("####")
    if not sep:
        body, answer = solution, ""
    return _CALC.sub("", body).strip(), answer.strip().replace(",", "")


def make_prompt(problem: str, system_prompt: str = SYSTEM_PROMPT) -> list[dict[str, str]]:
    """The conversational prompt the student sees (its chat template is applied by TRL)."""
    msgs = [{"role": "system", "content": system_prompt}] if system_prompt else []
    return [*msgs, {"role": "user", "content": problem}]


def load_gsm8k(path: str | Path, limit: int | None = None,
               system_prompt: str = SYSTEM_PROMPT) -> list[dict[str, Any]]:
    """GRPO rows ``{prompt, problem, teacher_reasoning, answer}`` from a GSM8K jsonl file."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: pass --data <GSM8K train.jsonl> (the "
                                f"project reads ../shared/data/gsm8k/train.jsonl by default)")
    from gsrm.validation import check_teacher

    rows = []
    with path.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            ex = json.loads(line)
            problem = ex.get("question") or ex.get("problem")
            solution = ex.get("answer") or ex.get("solution") or ""
            teacher = ex.get("teacher_reasoning")
            answer = ex.get("final_answer")
            if teacher is None or answer is None:
                t, a = teacher_from_solution(solution)
                teacher = t if teacher is None else teacher
                answer = a if answer is None else answer
            if not problem:
                raise ValueError(f"{path} line {lineno}: no 'question' (or 'problem') field")
            # a row without reasoning has nothing to distil or imitate; refuse it here, before
            # training starts, rather than when its first batch reaches the reward
            try:
                check_teacher(teacher, "teacher_reasoning")
            except ValueError as exc:
                hint = "" if "teacher_reasoning" in ex else \
                    " (the solution holds no reasoning before '####')"
                raise ValueError(f"{path} line {lineno}: {exc}{hint}") from None
            rows.append({"prompt": make_prompt(problem, system_prompt), "problem": problem,
                         "teacher_reasoning": teacher, "answer": str(answer)})
            if limit is not None and len(rows) >= limit:
                break
    if not rows:
        raise ValueError(f"{path} holds no examples")
    return rows


def sft_rows(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Prompt-completion rows for SFT on the teacher's traces (loss on the completion only).

    >>> sft_rows([{"prompt": [{"role": "user", "content": "q"}], "teacher_reasoning": "r",
    ...            "answer": "5"}])[0]["completion"]
    [{'role': 'assistant', 'content': '<think>r</think> 5'}]
    """
    return [{"prompt": r["prompt"], "completion": [
        {"role": "assistant", "content": f"<think>{r['teacher_reasoning']}</think> {r['answer']}"}]}
        for r in rows]


# --------------------------------------------------------------------------- arguments
def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--preset", choices=sorted(PRESETS), default="cpu",
                   help="default settings (flags given explicitly override them)")
    p.add_argument("--model", default=None, help="student HF model dir or hub id (default: the "
                   "embedded SmolLM2-135M-Instruct from gsrm.weights)")
    p.add_argument("--data", default=DEFAULT_DATA, help="GSM8K-style jsonl (question, answer)")
    p.add_argument("--limit", type=int, help="use the first N problems")
    p.add_argument("--output-dir", default="runs/rlkd", help="checkpoints, metrics.jsonl, final/")
    p.add_argument("--max-steps", type=int, help="optimizer steps (-1: run --epochs)")
    p.add_argument("--epochs", type=float, help="epochs when --max-steps is -1")
    p.add_argument("--batch-size", type=int, help="per-device batch (GRPO: completions)")
    p.add_argument("--grad-accum", type=int, help="gradient accumulation steps")
    p.add_argument("--lr", type=float, help="learning rate")
    p.add_argument("--lora-r", type=int, help="LoRA rank")
    p.add_argument("--lora-alpha", type=int, help="LoRA alpha")
    p.add_argument("--save-steps", type=int, help="checkpoint every N steps")
    p.add_argument("--logging-steps", type=int, help="log every N steps")
    p.add_argument("--bf16", action=argparse.BooleanOptionalAction, default=None,
                   help="bf16 mixed precision")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--resume", nargs="?", const="auto", default=None,
                   help="resume from the last checkpoint in --output-dir, or from this path")
    p.add_argument("--system-prompt", default=SYSTEM_PROMPT)
    p.add_argument("--report-to", default="none", help="transformers report_to (none, "
                   "tensorboard, wandb, ...)")


class _Help(argparse.ArgumentDefaultsHelpFormatter):
    """Shows real defaults; options filled from the preset say so instead of "None"."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if action.default is None and action.dest in PRESETS["cpu"]:
            return text + " (default: from --preset)"
        if action.default is None or action.default is argparse.SUPPRESS:
            return text
        return super()._get_help_string(action) or text


def build_parser() -> argparse.ArgumentParser:
    """The ``rlkd-train`` command line (``grpo`` and ``sft`` subcommands)."""
    parser = argparse.ArgumentParser(prog="rlkd-train", description=__doc__.split("\n\n")[0],
                                     formatter_class=_Help)
    sub = parser.add_subparsers(dest="command", required=True)

    g = sub.add_parser("grpo", help="RLKD / RLKD-zero with TRL's GRPOTrainer",
                       formatter_class=_Help)
    _common(g)
    g.add_argument("--mode", choices=("rlkd", "rlkd-zero"), default="rlkd-zero",
                   help="rlkd: start from the SFT checkpoint --init; rlkd-zero: from --model")
    g.add_argument("--init", help="SFT checkpoint (a model dir, or a LoRA adapter dir that is "
                   "merged into its base) for --mode rlkd")
    g.add_argument("--rewards", default="accuracy,format,tag_count,gsrm",
                   help="comma-separated reward components (rl_client.rewards.REWARDS)")
    g.add_argument("--weights", default="", help="overrides of the default weights, e.g. "
                   "'gsrm=15,accuracy=15' (defaults: accuracy 15, format 10, tag_count 10, "
                   "gsrm 15)")
    g.add_argument("--num-generations", type=int, help="completions per prompt (G)")
    g.add_argument("--max-completion-length", type=int, help="max new tokens per completion")
    g.add_argument("--temperature", type=float, help="sampling temperature")
    g.add_argument("--beta", type=float, help="KL coefficient (0 skips the reference model)")
    g.add_argument("--gsrm", default="http://127.0.0.1:8000",
                   help="reward endpoint base URL, or 'local' for an in-process GSRM")
    g.add_argument("--gsrm-backend", default=None,
                   help="--gsrm local: backend (default: openvino on the CPU, transformers "
                        "when $GSRM_DEVICE names a GPU)")
    g.add_argument("--gsrm-judge", default="embedding", help="--gsrm local: judge")
    g.add_argument("--gsrm-model", default=None, help="--gsrm local: GSRM model dir")
    g.add_argument("--gsrm-device", default=None, help="--gsrm local, transformers backend: "
                   "torch device of the GSRM (default: $GSRM_DEVICE, else cpu)")
    g.add_argument("--gsrm-dtype", default=None, help="--gsrm local, transformers backend: "
                   "float32, bfloat16, float16 or auto (default: the backend's, float32)")
    g.add_argument("--gsrm-max-new-tokens", type=int, default=None,
                   help="--gsrm local: token budget of one decomposition (default: the "
                   "backend's, 1024)")
    g.add_argument("--gsrm-batch-size", type=int, default=None,
                   help="--gsrm local, transformers backend: rows decoded together (default: "
                   "the backend's, 8); the two-stage decomposer describes every step span of "
                   "a batch's completions as one generation each, so a GPU wants far more")
    g.add_argument("--gsrm-mode", choices=("paper", "normalized"), default="paper",
                   help="reward mode (paper: sum of step rewards)")
    g.add_argument("--gsrm-api-key", default=None, help="endpoint API key (or GSRM_API_KEY)")
    g.add_argument("--gsrm-timeout", type=float, default=300.0, help="seconds per request")
    g.add_argument("--gsrm-retries", type=int, default=4, help="retries per request")
    g.add_argument("--gsrm-on-error", choices=("raise", "skip"), default="raise",
                   help="raise: stop training on a reward failure; skip: drop those samples")
    g.add_argument("--gsrm-async", action="store_true", help="use the async client")
    g.add_argument("--time-budget", type=float, default=None,
                   help="seconds of training: stop (and save final/) before the step that "
                   "would end past it, judged by the last step's duration (default: none)")

    s = sub.add_parser("sft", help="SFT baseline on the teacher's traces (TRL SFTTrainer)",
                       formatter_class=_Help)
    _common(s)
    s.add_argument("--max-length", type=int, help="max tokens per example")
    return parser


def resolve(args: argparse.Namespace) -> argparse.Namespace:
    """Fill every unset option from the preset (explicit flags win)."""
    for key, value in PRESETS[args.preset].items():
        if getattr(args, key, value) is None:
            setattr(args, key, value)
    return args


# --------------------------------------------------------------------------- model
def default_student() -> str:
    from gsrm.weights import default_model_dir

    return str(default_model_dir())


def load_student(path: str, bf16: bool = False) -> tuple[Any, Any]:
    """(model, tokenizer) from a model dir / hub id, or a LoRA adapter dir merged into its base.

    Why merge: RLKD starts from the SFT student and trains a fresh LoRA on top of it; a merged
    model keeps ``GRPOTrainer``'s reference (adapter disabled) equal to the SFT student.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    dtype = torch.bfloat16 if bf16 else torch.float32
    marker = Path(path) / INIT_MARKER
    if marker.exists():  # an RLKD adapter trained on top of a merged SFT student
        from peft import PeftModel

        model, tokenizer = load_student(json.loads(marker.read_text())["init"], bf16)
        return PeftModel.from_pretrained(model, path).merge_and_unload(), tokenizer
    adapter_cfg = Path(path) / "adapter_config.json"
    if adapter_cfg.exists():
        from peft import PeftModel

        base = json.loads(adapter_cfg.read_text())["base_model_name_or_path"]
        model = AutoModelForCausalLM.from_pretrained(base, dtype=dtype)
        model = PeftModel.from_pretrained(model, path).merge_and_unload()
        tok_src = path if (Path(path) / "tokenizer_config.json").exists() else base
    else:
        model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
        tok_src = path
    tokenizer = AutoTokenizer.from_pretrained(tok_src)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer


def lora_config(args: argparse.Namespace) -> Any:
    from peft import LoraConfig

    return LoraConfig(r=args.lora_r, lora_alpha=args.lora_alpha, lora_dropout=0.05,
                      target_modules="all-linear", task_type="CAUSAL_LM")


def resume_arg(resume: str | None, output_dir: str) -> str | bool | None:
    """The ``resume_from_checkpoint`` value: the last checkpoint for ``auto`` (None if none)."""
    if resume is None:
        return None
    if resume != "auto":
        return resume
    from transformers.trainer_utils import get_last_checkpoint

    out = Path(output_dir)
    return get_last_checkpoint(str(out)) if out.is_dir() else None


def metrics_callback(path: Path) -> Any:
    """A TrainerCallback appending every log record (one JSON line per log) to ``path``."""
    from transformers import TrainerCallback

    class JsonlLogger(TrainerCallback):
        def on_log(self, args: Any, state: Any, control: Any, logs: Any = None,
                   **kwargs: Any) -> None:
            if logs and state.is_world_process_zero:
                path.parent.mkdir(parents=True, exist_ok=True)
                with path.open("a", encoding="utf-8") as fh:
                    fh.write(json.dumps({"step": state.global_step, **logs}) + "\n")

    return JsonlLogger()


class TimeBudget:
    """Decides when a run with a wall-time budget stops: before a step that would overrun it.

    Why the last step's duration: a GRPO step's cost is mostly generation and reward, which
    stay about constant across steps; the first step also pays warm-up, so it overestimates.
    ``clock`` is injectable for tests.

    >>> t = iter([0.0, 30.0, 55.0, 80.0])
    >>> budget = TimeBudget(100.0, clock=lambda: next(t))
    >>> budget.start(); [budget.step_done() for _ in range(3)]
    [False, False, True]
    """

    def __init__(self, seconds: float, clock: Any = None) -> None:
        import time

        self.seconds = seconds
        self.clock = clock or time.monotonic
        self.started = self.last = 0.0
        self.stopped = False

    def start(self) -> None:
        self.started = self.last = self.clock()

    def step_done(self) -> bool:
        """Record a finished step; True when the next one would end past the budget."""
        now = self.clock()
        step_s, self.last = now - self.last, now
        self.stopped = now - self.started + step_s > self.seconds
        return self.stopped

    @property
    def elapsed(self) -> float:
        return self.last - self.started


def time_budget_callback(budget: TimeBudget) -> Any:
    """A TrainerCallback that ends training when ``budget`` says the next step would overrun."""
    from transformers import TrainerCallback

    class TimeBudgetCallback(TrainerCallback):
        def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            budget.start()

        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if budget.step_done():
                print(f"rlkd-train: time budget {budget.seconds:g}s: stopping after step "
                      f"{state.global_step} ({budget.elapsed:.1f}s)", file=sys.stderr)
                control.should_training_stop = True

    return TimeBudgetCallback()


def _trainer_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    return {"output_dir": args.output_dir, "learning_rate": args.lr,
            "per_device_train_batch_size": args.batch_size,
            "gradient_accumulation_steps": args.grad_accum, "max_steps": args.max_steps,
            "num_train_epochs": args.epochs, "logging_steps": args.logging_steps,
            "save_strategy": "steps", "save_steps": args.save_steps, "bf16": bool(args.bf16),
            "seed": args.seed, "report_to": args.report_to, "save_only_model": False}


# --------------------------------------------------------------------------- grpo
def gsrm_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """Keyword arguments for ``rewards.make_gsrm_reward`` from the ``--gsrm*`` flags."""
    import os

    kw: dict[str, Any] = {"gsrm": args.gsrm, "on_error": args.gsrm_on_error}
    if args.gsrm == "local":
        from gsrm.backends import default_backend

        kw.update(backend=args.gsrm_backend or default_backend(args.gsrm_device),
                  judge=args.gsrm_judge, mode=args.gsrm_mode)
        backend_kw = {key: value for key, value in (
            ("model", args.gsrm_model), ("device", args.gsrm_device),
            ("dtype", args.gsrm_dtype), ("max_new_tokens", args.gsrm_max_new_tokens),
            ("batch_size", args.gsrm_batch_size),
        ) if value is not None}
        if backend_kw:
            kw["backend_kwargs"] = backend_kw
    else:
        kw.update(async_=args.gsrm_async, options={"mode": args.gsrm_mode},
                  api_key=args.gsrm_api_key or os.environ.get("GSRM_API_KEY") or None,
                  timeout=args.gsrm_timeout, max_retries=args.gsrm_retries)
    return kw


def local_gsrm_info(funcs: Sequence[Any]) -> dict[str, Any] | None:
    """What the in-process GSRM (``--gsrm local``) ran: its decomposer (``two-stage``: the
    trained segmenter, then the LM per span; or ``single-pass``), the segmenter's identity,
    and how many decompositions it made and served from its cache. None without one."""
    for func in funcs:
        gsrm = getattr(getattr(func, "scorer", None), "gsrm", None)
        if gsrm is None or not hasattr(gsrm, "decomposer"):
            continue
        info: dict[str, Any] = {"decomposer": "two-stage" if gsrm.two_stage else "single-pass",
                                "backend": gsrm.backend.name, **gsrm.stats}
        if gsrm.two_stage:
            info["segmenter"] = gsrm.segmenter.identity()
        return info
    return None


def grpo_config(args: argparse.Namespace, names: Sequence[str]) -> Any:
    """The ``GRPOConfig`` for resolved ``args`` and reward component ``names``."""
    from trl import GRPOConfig

    from rl_client.rewards import parse_weights

    return GRPOConfig(**_trainer_kwargs(args), num_generations=args.num_generations,
                      max_completion_length=args.max_completion_length,
                      temperature=args.temperature, beta=args.beta,
                      reward_weights=parse_weights(args.weights, names),
                      remove_unused_columns=False, log_completions=False)


def run_grpo(args: argparse.Namespace) -> int:
    from datasets import Dataset
    from trl import GRPOTrainer

    from rl_client.rewards import get_reward_funcs

    names = [n.strip() for n in args.rewards.split(",") if n.strip()]
    if args.mode == "rlkd" and not args.init:
        print("rlkd-train: error: --mode rlkd starts from an SFT checkpoint: pass --init "
              "(e.g. runs/sft/final from `rlkd-train sft`), or use --mode rlkd-zero",
              file=sys.stderr)
        return 2
    rows = load_gsm8k(args.data, args.limit, args.system_prompt)  # fail fast on bad data
    config = grpo_config(args, names)
    funcs = get_reward_funcs(names, gsrm_kwargs=gsrm_kwargs(args))
    model, tokenizer = load_student(args.init if args.mode == "rlkd" else
                                    (args.model or default_student()), bf16=False)
    callbacks = [metrics_callback(Path(args.output_dir) / "metrics.jsonl")]
    budget = TimeBudget(args.time_budget) if args.time_budget else None
    if budget is not None:
        callbacks.append(time_budget_callback(budget))
    trainer = GRPOTrainer(model=model, reward_funcs=funcs, args=config,
                          train_dataset=Dataset.from_list(rows), processing_class=tokenizer,
                          peft_config=lora_config(args), callbacks=callbacks)
    trainer.train(resume_from_checkpoint=resume_arg(args.resume, args.output_dir))
    final = Path(args.output_dir) / "final"
    trainer.save_model(str(final))
    tokenizer.save_pretrained(str(final))
    if args.mode == "rlkd" and args.init:
        # the LoRA was trained on top of the merged SFT student: record that, so that
        # load_student merges the SFT adapter first (peft's config names only the base)
        (final / INIT_MARKER).write_text(json.dumps({"init": str(Path(args.init).resolve())}))
    summary: dict[str, Any] = {"output_dir": str(final), "steps": trainer.state.global_step,
                               "rewards": names, "weights": list(config.reward_weights)}
    if budget is not None:
        summary["time_budget"] = {"seconds": budget.seconds, "stopped": budget.stopped,
                                  "train_s": round(budget.elapsed, 1)}
    gsrm_info = local_gsrm_info(funcs)
    if gsrm_info is not None:
        summary["gsrm"] = gsrm_info
    print(json.dumps(summary))
    return 0


# --------------------------------------------------------------------------- sft
def run_sft(args: argparse.Namespace) -> int:
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    rows = sft_rows(load_gsm8k(args.data, args.limit, args.system_prompt))
    model, tokenizer = load_student(args.model or default_student(), bf16=False)
    config = SFTConfig(**_trainer_kwargs(args), max_length=args.max_length)
    trainer = SFTTrainer(model=model, args=config, train_dataset=Dataset.from_list(rows),
                         processing_class=tokenizer, peft_config=lora_config(args),
                         callbacks=[metrics_callback(Path(args.output_dir) / "metrics.jsonl")])
    trainer.train(resume_from_checkpoint=resume_arg(args.resume, args.output_dir))
    final = Path(args.output_dir) / "final"
    trainer.save_model(str(final))
    tokenizer.save_pretrained(str(final))
    print(json.dumps({"output_dir": str(final), "steps": trainer.state.global_step}))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``rlkd-train``; returns the process exit code."""
    args = resolve(build_parser().parse_args(argv))
    try:
        if args.command == "grpo":
            return run_grpo(args)
        return run_sft(args)
    except (FileNotFoundError, ValueError) as exc:
        print(f"rlkd-train: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
