"""Export the GSRM model (base + LoRA adapter, merged) to OpenVINO IR for the ``openvino`` backend.

Why a separate step, and a separate Python: OpenVINO GenAI (``openvino-genai``, the runtime of
``gsrm.backends.openvino``) installs beside gsrm's lock, but the exporter that writes its IR
(``optimum-intel``'s ``optimum-cli export openvino``) pins an older transformers (<5.6) and
huggingface-hub (<1.22) than the lock (``constraints.txt``). So the export runs once per model
+ adapter + weight format, in its own virtual environment, and writes into gsrm's cache:

1. here (gsrm's environment): the LoRA adapter is merged into the base model with peft and
   saved as a plain Hugging Face folder (``merged/``);
2. in the export environment: ``optimum-cli export openvino --task text-generation-with-past
   --weight-format {fp32,int8}`` turns it into ``openvino_model.xml/.bin`` plus the tokenizer
   models OpenVINO GenAI reads.

``--make-env`` builds that environment under the cache (pip, from PyPI, pinned in
``EXPORT_REQUIREMENTS``); ``--python`` or ``$GSRM_OPENVINO_EXPORT_PYTHON`` names one you made.
Outputs are written into a temporary folder and renamed, so an interrupted export leaves
nothing half-written. The folder is named after the base model, the adapter's content hash and
the weight format (``ir_dir``), so a retrained adapter gets a new export.

Example::

    $ gsrm-export-openvino --make-env            # once: the export environment (~2 min)
    $ gsrm-export-openvino                       # the default model + describer adapter, fp32
    $ gsrm decompose trace.json --backend openvino
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Literal, get_args

from gsrm.weights import DEFAULT_MODEL_NAME, cache_dir, resolve_adapter

WeightFormat = Literal["fp32", "int8"]
WEIGHT_FORMATS: tuple[str, ...] = get_args(WeightFormat)
"""fp32: weights as trained (the backend's default: the transformers backend's outputs);
int8: weights compressed to 8 bits (faster, smaller, outputs differ a little)."""
PYTHON_ENV = "GSRM_OPENVINO_EXPORT_PYTHON"
"""Environment variable naming the export environment's python (see the module docstring)."""
EXPORT_REQUIREMENTS = (
    "torch==2.13.0",
    "optimum-intel==2.2.0",
    "optimum==2.3.0",
    "transformers==5.5.4",
    "huggingface-hub==1.21.0",
    "tokenizers==0.22.2",
    "nncf==3.4.0",
    "openvino==2026.4.1",
    "openvino-tokenizers==2026.4.1.0",
)
"""The export environment, as measured to work on 2026-12-01 (torch first, the CPU build)."""
IR_FILE = "openvino_model.xml"


class ExportError(RuntimeError):
    """The export could not run (no export environment, exporter failed, ...)."""


def _adapter_key(adapter: str | None) -> str:
    """Content hash of an adapter folder's config and weights ("base" without one)."""
    if not adapter:
        return "base"
    h = hashlib.sha256()
    folder = Path(adapter)
    for name in ("adapter_config.json", "adapter_model.safetensors", "adapter_model.bin"):
        f = folder / name
        if f.is_file():
            h.update(name.encode())
            h.update(f.read_bytes())
    return h.hexdigest()[:12]


def ir_dir(model: str | None, adapter: str | None, weights: str,
           root: Path | None = None) -> Path:
    """Where the IR of (base model, resolved adapter folder, weight format) lives in the cache.

    >>> ir_dir(None, None, "int8", Path("/c")).as_posix()
    '/c/openvino/smollm2-135m-instruct-base-int8'
    """
    if weights not in WEIGHT_FORMATS:
        raise ValueError(f"unknown weight format {weights!r}; choose one of {WEIGHT_FORMATS}")
    base = DEFAULT_MODEL_NAME if model is None else Path(model).name or "model"
    return (root or cache_dir()) / "openvino" / f"{base}-{_adapter_key(adapter)}-{weights}"


def env_dir(root: Path | None = None) -> Path:
    """The export environment ``--make-env`` builds."""
    return (root or cache_dir()) / "openvino-export-env"


def export_python(explicit: str | None = None) -> Path:
    """The export environment's python: ``explicit``, ``$GSRM_OPENVINO_EXPORT_PYTHON``, else
    the one ``--make-env`` built; an ExportError saying how to get one otherwise."""
    raw = explicit or os.environ.get(PYTHON_ENV, "").strip()
    path = Path(raw).expanduser() if raw else env_dir() / "bin" / "python"
    if not path.is_file():
        raise ExportError(
            f"no OpenVINO export environment at {path}: run `gsrm-export-openvino --make-env` "
            f"(or pass --python / set ${PYTHON_ENV} to a python with {EXPORT_REQUIREMENTS[1]})")
    return path


def make_env(root: Path | None = None) -> Path:
    """Build the export environment (a venv with ``EXPORT_REQUIREMENTS``); its python."""
    target = env_dir(root)
    py = target / "bin" / "python"
    subprocess.run([sys.executable, "-m", "venv", str(target)], check=True)
    pip = [str(py), "-m", "pip", "install", "-q"]
    subprocess.run([*pip, EXPORT_REQUIREMENTS[0]], check=True)  # torch first: the CPU build
    subprocess.run([*pip, *EXPORT_REQUIREMENTS], check=True)
    # optimum-intel pulls torchvision, built for another torch; nothing the export runs needs it
    subprocess.run([str(py), "-m", "pip", "uninstall", "-y", "-q", "torchvision"], check=False)
    return py


def merge_adapter(model: str | None, adapter: str | None, out: Path) -> None:
    """The base model with the adapter merged in, saved as a Hugging Face folder (fp32)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from gsrm.weights import default_model_dir

    src = model or str(default_model_dir())
    lm = AutoModelForCausalLM.from_pretrained(src, dtype=torch.float32)
    if adapter:
        from peft import PeftModel

        lm = PeftModel.from_pretrained(lm, adapter).merge_and_unload()
    lm.save_pretrained(str(out))
    AutoTokenizer.from_pretrained(src).save_pretrained(str(out))


def export(model: str | None = None, adapter: str | None = "auto", weights: str = "fp32",
           python: str | None = None, force: bool = False) -> Path:
    """Export (model, adapter) to IR in the cache and return its folder (kept when present)."""
    resolved = resolve_adapter(adapter, model)
    target = ir_dir(model, resolved, weights)
    if (target / IR_FILE).is_file() and not force:
        return target
    py = export_python(python)
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".export-") as tmp:
        merged, ir = Path(tmp) / "merged", Path(tmp) / "ir"
        merge_adapter(model, resolved, merged)
        cmd = [str(py), "-m", "optimum.commands.optimum_cli", "export", "openvino",
               "--model", str(merged), "--task", "text-generation-with-past",
               "--weight-format", weights, str(ir)]
        done = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if done.returncode != 0 or not (ir / IR_FILE).is_file():
            tail = "\n".join((done.stderr or done.stdout).strip().splitlines()[-15:])
            raise ExportError(f"optimum-cli export failed (exit {done.returncode}):\n{tail}")
        if target.exists():
            shutil.rmtree(target)
        ir.rename(target)
    return target


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="gsrm-export-openvino",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=None, help="base model folder (default: the embedded one)")
    p.add_argument("--adapter", default="auto",
                   help="LoRA adapter: auto (the shipped describer), a shipped name, a folder, "
                   "or none (default: %(default)s)")
    p.add_argument("--weights", default="fp32", choices=WEIGHT_FORMATS,
                   help="weight format (default: %(default)s)")
    p.add_argument("--python", default=None,
                   help=f"the export environment's python (default: ${PYTHON_ENV}, else the "
                   "one --make-env builds)")
    p.add_argument("--make-env", action="store_true",
                   help="build the export environment under the cache first (pip, PyPI)")
    p.add_argument("--force", action="store_true", help="export again even if present")
    return p


def main(argv: list[str] | None = None) -> int:
    """Export and print the IR folder; 2 when the export environment is missing, 1 on failure."""
    args = build_parser().parse_args(argv)
    try:
        if args.make_env:
            print(f"export environment: {make_env()}", file=sys.stderr)
        print(export(args.model, args.adapter, args.weights, args.python, args.force))
    except ExportError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2 if "no OpenVINO export environment" in str(exc) else 1
    except (subprocess.CalledProcessError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
