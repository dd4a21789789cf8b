"""``gsrm-train``: build SFT data, label traces with a teacher LLM, LoRA-fine-tune the GSRM.

Reproducing the shipped ``cpu-small`` adapter (see ``gsrm/adapters/cpu-small/MODEL_CARD.md``)::

    gsrm-train build-data --data ../shared/data --out runs/sft-data
    gsrm-train sft --data-dir runs/sft-data --out runs/cpu-small --preset cpu-small --seed 0

On several GPUs: ``accelerate launch -m training.cli sft --preset paper ...``.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path


def build_parser() -> argparse.ArgumentParser:
    from training.data import SOURCES
    from training.sft import PRESETS

    p = argparse.ArgumentParser(prog="gsrm-train", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)

    b = sub.add_parser("build-data", help="write train/validation/test JSONL + manifest")
    b.add_argument("--data", type=Path, default=Path("../shared/data"),
                   help="folder with gsm8k/, prmbench/, prm800k_phase1/, bigbench_mistake/")
    b.add_argument("--out", type=Path, required=True, help="output folder")
    b.add_argument("--sources", default=",".join(SOURCES),
                   help=f"comma-separated, from {sorted(SOURCES)}")
    b.add_argument("--labels", type=Path, default=None,
                   help="validated teacher-LLM labels from `gsrm-train label` to add")
    b.add_argument("--seed", type=int, default=0, help="layout seed")

    s = sub.add_parser("sft", help="LoRA SFT with transformers Trainer + peft")
    s.add_argument("--data-dir", type=Path, required=True, help="output of build-data")
    s.add_argument("--out", type=Path, required=True, help="run folder (checkpoints, adapter)")
    s.add_argument("--preset", choices=sorted(PRESETS), default="cpu-small")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--resume", action="store_true", help="continue from the last checkpoint")
    s.add_argument("--base-model", default=None, help="override the preset's base model")
    s.add_argument("--max-minutes", type=float, default=None, help="wall-time budget")
    s.add_argument("--max-steps-examples", type=int, default=None,
                   help="cap the number of training examples (smoke runs)")
    s.add_argument("--max-steps", type=int, default=None, help="stop after N optimiser steps")
    s.add_argument("--max-length", type=int, default=None, help="drop longer examples")
    s.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    s.add_argument("--mask-copied-answers", action="store_true",
                   help="describer data: keep an answer that copies six words or more of its "
                        "span out of the loss (gsrm.text.copies_span)")
    s.add_argument("--mix", default=None,
                   help="examples per source, overriding the preset's mix "
                        "(e.g. 'bbm=360'; 'all' for every row of a source)")

    e = sub.add_parser("export", help="copy a run's adapter into the package (gsrm/adapters/NAME)")
    e.add_argument("--run", type=Path, required=True, help="run folder of `gsrm-train sft`")
    e.add_argument("--data-dir", type=Path, default=None, help="its data folder (manifest)")
    e.add_argument("--name", default="cpu-small", help="adapter name under gsrm/adapters/")

    sg = sub.add_parser("segmenter", help="train the step segmenter (gsrm.segment)")
    sg.add_argument("--data", type=Path, default=Path("../shared/data"),
                    help="folder with gsm8k/, prmbench/, prm800k_phase1/, bigbench_mistake/")
    sg.add_argument("--out", type=Path, required=True, help="run folder (checkpoints, model)")
    sg.add_argument("--seed", type=int, default=0)
    sg.add_argument("--epochs", type=int, default=None)
    sg.add_argument("--max-minutes", type=float, default=None, help="wall-time budget")
    sg.add_argument("--sources", default=None,
                    help="comma-separated training.segdata sources (default: all)")
    sg.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    sg.add_argument("--resume", action="store_true", help="continue from the last epoch")

    ds = sub.add_parser("describer-data",
                        help="write per-span describer SFT data (training/descdata.py)")
    ds.add_argument("--data", type=Path, default=Path("../shared/data"))
    ds.add_argument("--out", type=Path, required=True, help="output folder")
    ds.add_argument("--seed", type=int, default=0)
    ds.add_argument("--span-format", default="tags",
                    help="the describer's prompt and reply format (gsrm.spanformat: "
                         "tags, pqa, qa: pqa without the plan line, derived from the question)")
    ds.add_argument("--answer-rule", default="short",
                    help="how a row's answer is read from its step (training.descdata."
                         "ANSWER_RULES: short, the shipped describer's; result, briefer on "
                         "long traces)")
    ds.add_argument("--mix", default=None,
                    help="examples per source, overriding training.descdata.MIX "
                         "(e.g. 'bbm=750,champ=0')")

    rw = sub.add_parser("describer-relabel",
                        help="reword describer data's weak rows with a trained describer "
                             "(training/relabel.py)")
    rw.add_argument("--data-dir", type=Path, required=True, help="output of describer-data")
    rw.add_argument("--out", type=Path, required=True, help="output folder")
    rw.add_argument("--adapter", default="auto",
                    help="the describer that rewords (default 'auto': the shipped default; "
                         "the shipped pqa describers were reworded by 'describer')")
    rw.add_argument("--backend", default="openvino", choices=("openvino", "transformers"))
    rw.add_argument("--batch-size", type=int, default=64)
    rw.add_argument("--threads", type=int, default=None, help="CPU threads")

    xs = sub.add_parser("export-segmenter",
                        help="copy a segmenter run into the package (gsrm/adapters/segmenter)")
    xs.add_argument("--run", type=Path, required=True, help="run folder of `gsrm-train segmenter`")

    lab = sub.add_parser("label", help="label traces with a teacher LLM (OpenAI-compatible)")
    from training import label

    label.add_arguments(lab)
    return p


def _build_data(args: argparse.Namespace) -> int:
    from training.data import build, write_dataset

    sources = [s.strip() for s in args.sources.split(",") if s.strip()]
    examples, report = build(args.data, sources, seed=args.seed, labels=args.labels)
    manifest = write_dataset(examples, args.out, report, {
        "data_root": str(args.data), "sources": sources, "seed": args.seed,
        "labels": str(args.labels) if args.labels else None})
    print(json.dumps({"out": str(args.out), "counts": manifest["counts"],
                      "skipped": manifest["skipped"]}))
    for line in report.problems[:20]:
        print(f"skipped: {line}", file=sys.stderr)
    return 0


def _sft(args: argparse.Namespace) -> int:
    import dataclasses

    from training.sft import PRESETS, train

    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    overrides: dict[str, object] = {}
    if args.base_model:
        overrides["base_model"] = args.base_model
    if args.max_minutes is not None:
        overrides["max_minutes"] = args.max_minutes
    if args.max_steps:
        overrides["max_steps"] = args.max_steps
    if args.max_length:
        overrides["max_length"] = args.max_length
    if args.mask_copied_answers:
        overrides["mask_copied_answers"] = True
    mix = PRESETS[args.preset].mix
    if args.mix:
        from training.data import override_mix

        mix = override_mix(mix, args.mix)
        overrides["mix"] = mix
    if args.max_steps_examples:
        mix = {k: (args.max_steps_examples if v is None else min(v, args.max_steps_examples))
               for k, v in mix.items()}
        overrides["mix"] = mix
    _ = dataclasses  # overrides are applied with dataclasses.replace inside train()
    info = train(args.data_dir, args.out, args.preset, seed=args.seed, resume=args.resume,
                 overrides=overrides, command="gsrm-train " + " ".join(sys.argv[1:]))
    print(json.dumps({k: v for k, v in dataclasses.asdict(info).items() if k != "log"}))
    return 0


def _describer_data(args: argparse.Namespace) -> int:
    from training.data import BuildReport, override_mix, write_dataset
    from training.descdata import MIX, build

    mix = {k: v for k, v in override_mix(MIX, args.mix).items() if v is not None}
    examples, counts, problems = build(args.data, mix=mix, seed=args.seed,
                                       span_format=args.span_format,
                                       answer_rule=args.answer_rule)
    report = BuildReport(counts=counts, problems=problems)
    manifest = write_dataset(examples, args.out, report, {
        "data_root": str(args.data), "kind": "describer", "mix": mix, "seed": args.seed,
        "span_format": args.span_format, "answer_rule": args.answer_rule})
    print(json.dumps({"out": str(args.out), "counts": manifest["counts"]}))
    return 0


def _describer_relabel(args: argparse.Namespace) -> int:
    from gsrm.backends import get_backend
    from gsrm.weights import adapter_for
    from training.relabel import relabel

    if args.data_dir.resolve() == args.out.resolve():
        raise ValueError("--out must differ from --data-dir (the input is kept as it is)")
    backend = get_backend(args.backend, adapter=adapter_for(args.adapter, "two-stage"),
                          batch_size=args.batch_size, threads=args.threads)
    manifest = relabel(args.data_dir, args.out, backend)
    print(json.dumps({"out": str(args.out), "reworded": manifest["reworded"]}))
    return 0


def _segmenter(args: argparse.Namespace) -> int:
    from training.segtrain import SegTrainConfig, train

    cfg = SegTrainConfig(seed=args.seed, threads=args.threads)
    if args.epochs is not None:
        cfg.epochs = args.epochs
    if args.max_minutes is not None:
        cfg.max_minutes = args.max_minutes
    if args.sources:
        cfg.sources = [x.strip() for x in args.sources.split(",") if x.strip()]
    summary = train(args.data, args.out, cfg, resume=args.resume,
                    command="gsrm-train " + " ".join(sys.argv[1:]))
    print(json.dumps({"out": str(args.out), "best": summary["best"],
                      "wall_minutes": summary["wall_minutes"]}))
    return 0


def _export_weights(src: Path, dest: Path) -> None:
    """Store LoRA weights as float16: half the size of the package, same outputs in practice
    (they are cast back to the model's dtype at load)."""
    import torch
    from safetensors.torch import load_file, save_file

    tensors = {k: v.to(torch.float16) if v.is_floating_point() else v
               for k, v in load_file(str(src)).items()}
    save_file(tensors, str(dest), metadata={"format": "pt"})


def _export(args: argparse.Namespace) -> int:
    import shutil
    import tempfile

    from gsrm.io import InputError
    from gsrm.weights import adapters_dir

    src = args.run / "adapter"
    files = ["adapter_config.json", "adapter_model.safetensors"]
    for f in files:
        if not (src / f).is_file():
            raise InputError(src / f, None, "not found (did `gsrm-train sft` finish?)")
    dest = adapters_dir() / args.name
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".export-", dir=dest.parent))
    shutil.copy2(src / "adapter_config.json", tmp / "adapter_config.json")
    _export_weights(src / "adapter_model.safetensors", tmp / "adapter_model.safetensors")
    cfg = json.loads((tmp / "adapter_config.json").read_text())
    cfg["base_model_name_or_path"] = "HuggingFaceTB/SmolLM2-135M-Instruct"  # not a local path
    (tmp / "adapter_config.json").write_text(json.dumps(cfg, indent=2) + "\n")
    for extra in (args.run / "run.json",
                  args.data_dir / "manifest.json" if args.data_dir else None):
        if extra is not None and extra.is_file():
            shutil.copy2(extra, tmp / (extra.name if extra.name == "run.json"
                                       else "data_manifest.json"))
    card = dest / "MODEL_CARD.md"
    if card.is_file():  # the card is written by hand from the printed figures; keep it
        shutil.copy2(card, tmp / card.name)
    for p in tmp.iterdir():
        p.chmod(0o644)
    tmp.chmod(0o755)
    if dest.exists():
        shutil.rmtree(dest)
    tmp.rename(dest)
    print(json.dumps({"exported": str(dest), "files": sorted(p.name for p in dest.iterdir())}))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``gsrm-train``; bad input exits 2 with the file and line."""
    from gsrm.io import InputError

    args = build_parser().parse_args(argv)
    try:
        if args.cmd == "build-data":
            return _build_data(args)
        if args.cmd == "sft":
            return _sft(args)
        if args.cmd == "export":
            return _export(args)
        if args.cmd == "segmenter":
            return _segmenter(args)
        if args.cmd == "describer-data":
            return _describer_data(args)
        if args.cmd == "describer-relabel":
            return _describer_relabel(args)
        if args.cmd == "export-segmenter":
            from training.segtrain import export

            print(json.dumps({"exported": str(export(args.run))}))
            return 0
        from training import label

        return label.run(args)
    except (InputError, KeyError, ValueError) as exc:
        print(f"gsrm-train: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
