"""Reword the weak rows of describer data with a trained describer (format distillation).

Why: the describer data's wording (meta-reasoning, sub-problem) is human only on GSM8K
socratic rows; on the other sources (PRM800K, branching, MATH, CHAMP, BIG-Bench Mistake,
PRMBench) it is the step's first sentence, so ``training.sft`` masks it and those rows teach
only the format and the answer. A describer trained that way words long-trace steps by
generalising from GSM8K. That held for the ``tags`` format but not for the compact ``pqa``
one (README, "A compact describer format"): trained the same way it left the ``Question:``
line empty on long math traces. Here a describer that holds (``--adapter``; the shipped pqa ones were reworded by ``describer``)
describes each weak row's span, and its meta-reasoning and sub-problem replace the weak ones
in the row's target, rendered in the data's own span format, with their loss on
(``SFTExample.train_wording``): a new format learns the trained describer's wording on every
source, while the answers stay the data's (the step's result, ``gsrm.calibrate.short_answer``)
and the human rows stay as they are.

Pure part: ``reword`` (rows + the describer's steps -> rows). I/O: ``relabel`` (read a data
folder, describe, write a new one atomically with a manifest saying what reworded it).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from gsrm.structure import Step
from training.data import SFTExample

SPLITS = ("train", "validation", "test")


def needs_wording(ex: SFTExample) -> bool:
    """A row whose wording ``training.sft`` would mask: the ones to reword."""
    from training.sft import train_wording

    return not train_wording(ex)


def reword(rows: Sequence[SFTExample], steps: Sequence[Step | None], span_format: str
           ) -> tuple[list[SFTExample], Counter[str]]:
    """``rows`` with each weak row's meta-reasoning and sub-problem replaced by ``steps``'s
    (one per row, None for a row not described), its answer kept, its wording trained.

    A step with an empty meta-reasoning or sub-problem leaves its row as it was (masked):
    the row still teaches the format and the answer, and no empty part is trained.
    """
    from gsrm.spanformat import get_span_format

    fmt = get_span_format(span_format)
    out: list[SFTExample] = []
    counts: Counter[str] = Counter()
    for ex, step in zip(rows, steps, strict=True):
        if step is None or not needs_wording(ex):
            out.append(ex)
            continue
        old = fmt.parse(ex.target)
        if old is None:
            raise ValueError(f"row {ex.id}: its target has no {fmt.name} step to reword")
        meta, sub = step.meta.strip(), step.subproblem.strip()
        if not meta or not sub:
            counts[f"{ex.source}/kept_masked"] += 1
            out.append(ex)
            continue
        counts[f"{ex.source}/reworded"] += 1
        out.append(ex.model_copy(update={"target": fmt.render(meta, sub, old.answer),
                                         "train_wording": True}))
    return out, counts


def relabel(data_dir: Path, out_dir: Path, backend: Any, batch: int = 256,
            progress: bool = True) -> dict[str, Any]:
    """Reword ``data_dir``'s weak train and validation rows with ``backend``'s describer and
    write the whole folder to ``out_dir`` (test rows copied as they are)."""
    from tqdm import tqdm

    from gsrm.describe import describe_many
    from training.data import BuildReport, load_examples, write_dataset

    manifest_path = data_dir / "manifest.json"
    if not manifest_path.is_file():
        raise ValueError(f"{manifest_path}: not found (is {data_dir} a describer-data folder?)")
    meta = json.loads(manifest_path.read_text())
    if meta.get("kind") != "describer":
        raise ValueError(f"{manifest_path}: kind is {meta.get('kind')!r}, not 'describer' "
                         "(`gsrm-train describer-data` writes such a folder)")
    span_format = str(meta.get("span_format") or "tags")
    rows: list[SFTExample] = []
    for split in SPLITS:
        path = data_dir / f"{split}.jsonl"
        if path.is_file():
            rows.extend(load_examples(path))
    todo = [i for i, ex in enumerate(rows) if ex.split != "test" and needs_wording(ex)]
    steps: list[Step | None] = [None] * len(rows)
    bar = tqdm(total=len(todo), unit="span", desc="reword", disable=not progress)
    for a in range(0, len(todo), batch):
        chunk = todo[a:a + batch]
        structs = describe_many(backend, [(rows[i].problem, rows[i].reasoning,
                                           [(0, len(rows[i].reasoning))]) for i in chunk])
        for i, s in zip(chunk, structs, strict=True):
            steps[i] = s.steps[0] if s.steps else None
        bar.update(len(chunk))
    bar.close()
    new_rows, counts = reword(rows, steps, span_format)
    report = BuildReport(counts=Counter(meta.get("counts") or {}))
    info = {k: v for k, v in meta.items()
            if k not in ("files", "counts", "skipped", "skipped_examples")}
    info["reworded_from"] = str(data_dir)
    info["reworded_by"] = {"backend": backend.name, "model": backend.model_id,
                           "span_format": backend.span_format}
    info["reworded"] = dict(sorted(counts.items()))
    return write_dataset(new_rows, out_dir, report, info)


__all__ = ["needs_wording", "relabel", "reword"]
