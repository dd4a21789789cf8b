"""Export the GSRM model (base + LoRA adapter, merged) for the ``openvino`` backend, in-process.

Why GGUF: OpenVINO GenAI builds its model graph straight from a llama-architecture GGUF file
(its GGUF reader, continuous batching included), and gsrm's base model already is one (the
embedded SmolLM2 ships as GGUF, ``gsrm.weights``). So the export needs nothing beyond gsrm's
own lock (no second Python, no ``optimum-intel`` pinning an older transformers):

1. the base model (the cached fp32 conversion of that GGUF) gets the LoRA adapter merged in
   with peft;
2. the merged tensors are written into a copy of the base GGUF with the ``gguf`` package
   (same metadata, tokenizer and chat template; tensor names and llama.cpp's rotary
   row order as the base file has them), as 8-bit ``Q8_0`` blocks (``int8``, the default:
   fast, small) or ``F16`` (``f16``: the transformers backend's outputs on all but a few spans,
   slower; OpenVINO's GGUF reader takes no F32 matrices);
3. the Hugging Face tokenizer is saved beside it, so prompts are tokenized exactly as in the
   transformers backend.

The folder is named after the base model's content, the adapter's content and the weight
format (``export_dir``), so a retrained adapter or another ``$GSRM_WEIGHTS`` gets a new export.
It is written into a temporary folder and renamed, so an interrupted export leaves nothing
half-written. The backend runs this on first use (~15 s on a laptop CPU); the command makes it
ahead of time.

Example::

    $ gsrm-export-openvino                       # the default model + describer adapter, int8
    $ gsrm decompose trace.json --backend openvino --ov-weights f16
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, get_args

from gsrm.weights import DEFAULT_MODEL_NAME, cache_dir, content_key, resolve_adapter

WeightFormat = Literal["int8", "f16"]
WEIGHT_FORMATS: tuple[str, ...] = get_args(WeightFormat)
"""int8: matrices as GGUF ``Q8_0`` (8-bit blocks of 32, the default: fastest, smallest);
f16: matrices as 16-bit floats (closest to the transformers backend's float32 outputs)."""
MODEL_FILE = "model.gguf"
EXPORT_VERSION = "gguf1"
"""Bumped when the export's output changes for the same inputs (part of the folder name)."""
SUPPORTED_ARCHITECTURES = ("llama",)
"""Architectures whose GGUF tensor layout ``hf_tensor_name`` and ``rope_permute`` know."""

_LAYER_PARTS = {
    "attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj", "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj", "attn_norm": "input_layernorm",
    "ffn_norm": "post_attention_layernorm",
}
_GLOBAL = {"token_embd.weight": "model.embed_tokens.weight",
           "output_norm.weight": "model.norm.weight", "output.weight": "lm_head.weight"}


class ExportError(RuntimeError):
    """The export could not run (a base model that is not a llama GGUF, a missing tensor, ...)."""


def hf_tensor_name(gguf_name: str) -> str:
    """The Hugging Face llama parameter a GGUF tensor holds.

    >>> hf_tensor_name("blk.3.attn_q.weight")
    'model.layers.3.self_attn.q_proj.weight'
    >>> hf_tensor_name("token_embd.weight")
    'model.embed_tokens.weight'
    """
    if gguf_name in _GLOBAL:
        return _GLOBAL[gguf_name]
    parts = gguf_name.split(".")
    if len(parts) == 4 and parts[0] == "blk" and parts[2] in _LAYER_PARTS:
        return f"model.layers.{parts[1]}.{_LAYER_PARTS[parts[2]]}.{parts[3]}"
    raise ExportError(f"GGUF tensor {gguf_name!r} has no known llama counterpart")


def rope_permute(weight: Any, n_head: int) -> Any:
    """Rows of a q/k projection in llama.cpp's rotary order (what its GGUF files store).

    transformers' GGUF loader applies the inverse when it reads the base model, so writing
    merged weights back needs this; ``weight`` is a (heads * head_dim, hidden) numpy array.
    """
    rows = weight.shape[0]
    return (weight.reshape(n_head, 2, rows // n_head // 2, *weight.shape[1:])
            .swapaxes(1, 2).reshape(weight.shape))


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


def base_gguf(model: str | None) -> Path:
    """The GGUF file the export copies: the default base model's source (the package's file
    or ``$GSRM_WEIGHTS``); an ExportError for any other base, which has no GGUF to copy."""
    from gsrm.weights import default_source

    src = default_source() if model is None else Path(model)
    if src.is_file() and src.suffix == ".gguf":
        return src
    raise ExportError(
        f"the openvino backend exports GGUF-sourced llama models only (the embedded default, "
        f"or GSRM_WEIGHTS=FILE.gguf); {src} is not a .gguf file: use --backend transformers")


def export_dir(model: str | None, adapter: str | None, weights: str,
               root: Path | None = None) -> Path:
    """Where the export of (base model, resolved adapter folder, weight format) lives."""
    if weights not in WEIGHT_FORMATS:
        raise ValueError(f"unknown weight format {weights!r}; choose one of {WEIGHT_FORMATS}")
    src = base_gguf(model)
    name = f"{DEFAULT_MODEL_NAME if model is None else src.stem}-{content_key(src)[:8]}"
    return ((root or cache_dir()) / "openvino"
            / f"{name}-{_adapter_key(adapter)}-{weights}-{EXPORT_VERSION}")


def merged_state(model: str | None, adapter: str | None) -> tuple[dict[str, Any], Any]:
    """The base model's fp32 tensors (numpy, by parameter name) with the adapter merged in,
    and its tokenizer."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from gsrm.weights import default_model_dir

    src = str(default_model_dir()) if model is None else model
    kwargs: dict[str, Any] = {}
    if src.endswith(".gguf"):
        src, kwargs["gguf_file"] = str(Path(src).parent), Path(src).name
    lm = AutoModelForCausalLM.from_pretrained(src, dtype=torch.float32, **kwargs)
    if adapter:
        from peft import PeftModel

        lm = PeftModel.from_pretrained(lm, adapter).merge_and_unload()
    state = {k: v.detach().float().numpy() for k, v in lm.state_dict().items()}
    return state, AutoTokenizer.from_pretrained(src, **kwargs)


def write_gguf(template: Path, state: Mapping[str, Any], out: Path, weights: str) -> None:
    """Write ``state`` into a copy of ``template`` (its metadata, tensor names and order):
    matrices as ``weights`` (Q8_0 or F16), vectors (norms) as F32."""
    import gguf
    import numpy as np

    reader = gguf.GGUFReader(str(template))
    arch = str(reader.fields["general.architecture"].contents())
    if arch not in SUPPORTED_ARCHITECTURES:
        raise ExportError(f"{template}: architecture {arch!r}; the export knows "
                          f"{SUPPORTED_ARCHITECTURES}")
    heads = int(reader.fields[f"{arch}.attention.head_count"].contents())
    kv_heads = int(reader.fields[f"{arch}.attention.head_count_kv"].contents())
    qtype = {"int8": gguf.GGMLQuantizationType.Q8_0,
             "f16": gguf.GGMLQuantizationType.F16}[weights]
    file_type = {"int8": gguf.LlamaFileType.MOSTLY_Q8_0, "f16": gguf.LlamaFileType.MOSTLY_F16}
    writer = gguf.GGUFWriter(str(out), arch=arch, endianess=reader.endianess)
    for field in reader.fields.values():
        if field.name.startswith("GGUF.") or field.name == "general.architecture":
            continue  # written by the writer itself
        kind = field.types[0]
        sub = field.types[-1] if kind == gguf.GGUFValueType.ARRAY else None
        value = int(file_type[weights]) if field.name == "general.file_type" else field.contents()
        writer.add_key_value(field.name, value, kind, sub_type=sub)
    for tensor in reader.tensors:
        name = hf_tensor_name(tensor.name)
        if name not in state:
            raise ExportError(f"the merged model has no {name} (for GGUF tensor {tensor.name})")
        array = np.ascontiguousarray(state[name], dtype=np.float32)
        if tensor.name.endswith("attn_q.weight"):
            array = rope_permute(array, heads)
        elif tensor.name.endswith("attn_k.weight"):
            array = rope_permute(array, kv_heads)
        if array.ndim == 2:
            writer.add_tensor(tensor.name, gguf.quants.quantize(array, qtype), raw_dtype=qtype)
        else:
            writer.add_tensor(tensor.name, array, raw_dtype=gguf.GGMLQuantizationType.F32)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def export(model: str | None = None, adapter: str | None = "auto", weights: str = "int8",
           force: bool = False) -> Path:
    """Export (model, adapter) into the cache and return its folder (kept when present).

    Several processes may start at once on a fresh machine (server workers, trainer reward
    workers) and export the same folder; the export is deterministic, so the first copy
    renamed into place wins and the others are dropped, and a folder another process may
    already be reading is never deleted unless ``force`` asks for a rewrite.
    """
    resolved = resolve_adapter(adapter, model)
    target = export_dir(model, resolved, weights)
    if (target / MODEL_FILE).is_file() and not force:
        return target
    template = base_gguf(model)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=".export-"))
    try:
        state, tokenizer = merged_state(model, resolved)
        write_gguf(template, state, tmp / MODEL_FILE, weights)
        tokenizer.save_pretrained(str(tmp))
        if (target / MODEL_FILE).is_file() and not force:
            return target  # another process finished the same export meanwhile: same bytes
        if target.exists():
            shutil.rmtree(target)
        try:
            os.replace(tmp, target)
        except OSError:
            if not (target / MODEL_FILE).is_file():
                raise
            # another process renamed its copy into place between our check and ours
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="gsrm-export-openvino",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=None,
                   help="base model GGUF file (default: the embedded one, or $GSRM_WEIGHTS)")
    p.add_argument("--adapter", default="auto",
                   help="LoRA adapter: auto (the shipped describer), a shipped name, a folder, "
                   "or none (default: %(default)s)")
    p.add_argument("--weights", default=WEIGHT_FORMATS[0], choices=WEIGHT_FORMATS,
                   help="weight format (default: %(default)s)")
    p.add_argument("--force", action="store_true", help="export again even if present")
    return p


def main(argv: list[str] | None = None) -> int:
    """Export and print the folder; 1 when the export cannot run."""
    args = build_parser().parse_args(argv)
    try:
        print(export(args.model, args.adapter, args.weights, args.force))
    except (ExportError, OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
