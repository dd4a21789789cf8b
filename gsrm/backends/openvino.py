"""``openvino``: OpenVINO GenAI on the CPU, the default engine there.

Why: on a CPU the describer's workload (many ~250-token prompts sharing a long prefix, ~50
tokens out each) is what a real inference engine is built for: OpenVINO GenAI's continuous
batching pipeline has a paged KV cache, prefix caching and 8-bit weights with int8 matrix
kernels, where the ``transformers`` backend batches plain torch calls. It reads a GGUF file of
the model with its adapter merged in, which ``gsrm.openvino_export`` writes into the cache on
first use (or ahead of time with ``gsrm-export-openvino``).

The prompt is the same chat-templated text as the transformers backend's (the tokenizer saved
with the export, ``transformers.AutoTokenizer``), tokenized here and handed over as ids;
completions come back as ids and are decoded here, so token counts and the budget flag are
exact; stop strings and the safeguards are applied by ``Backend.finished`` as everywhere.

Weights ``int8`` (the default) are the fastest: the CPU plugin quantizes activations to 8
bits on the fly to use its int8 kernels, so a few spans' descriptions differ from the
transformers backend's and depend on what else shares their batch; ``f16`` weights with
``precision="f32"`` give the transformers backend's descriptions on all but a few spans,
whatever the batch, at about two thirds of the speed. ``benchmarks/openvino_parity.py``
measures both properties, ``benchmarks/decompose.py`` the speed.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal, get_args

from gsrm.backends.base import BackendError, LocalModelBackend
from gsrm.prompts import Message
from gsrm.structure import Generation

Precision = Literal["f32", "auto"]
EARLY_STOP_EVERY = 8
"""Pipeline steps between two ``should_stop`` checks of the running completions
(``early_stop``)."""
EARLY_STOP_MIN_NEW = 48
"""Completions shorter than this are not checked: a description is ~50 tokens, so most end
before their first check, and the checks (a decode and a regex search each) cost nothing
where nothing loops."""
PRECISIONS: tuple[str, ...] = get_args(Precision)
"""Compute precision: ``f32``, or ``auto``, the CPU plugin's choice (bf16 on CPUs with
AMX/AVX512-BF16: faster, but a span's output then depends on what else shares its batch)."""


OV_WEIGHTS_HELP = ("openvino: weight format of the export (made on first use): int8 is "
                   "fastest; f16 gives the transformers backend's outputs on nearly every span, "
                   "whatever the batch")
KV_CACHE_GB = 1
"""Default KV cache of the pipeline, in GB (``SchedulerConfig.cache_size``): small enough
for issue 16's memory floor (2.5 GiB peak for the batch-32 benchmark). With prefix caching
the engine keeps every computed block until the cache is full, then reuses the least recent
ones; a larger cache keeps more shared prompts (eval/README.md, "engine fault": the fault
was not seen with 8 GB)."""
OV_KV_CACHE_HELP = ("openvino: KV cache size in GB (whole); larger keeps more shared prompts "
                    "cached, at that much more memory")
OV_PRECISION_HELP = ("openvino: compute precision of what is not int8; f32, or auto: bf16 "
                     "where the CPU has it (batch-dependent)")


def add_openvino_args(group: Any) -> None:
    """``--ov-weights``, ``--ov-precision`` and ``--ov-kv-cache-gb`` on an argparse parser or
    group: the same flags in ``gsrm``, ``gsrm-eval`` and the benchmarks (one place for their
    choices; ``gsrm-serve`` takes the same types and help text)."""
    from gsrm.openvino_export import WEIGHT_FORMATS

    group.add_argument("--ov-weights", default=WEIGHT_FORMATS[0], choices=WEIGHT_FORMATS,
                       help=f"{OV_WEIGHTS_HELP} (default: %(default)s)")
    group.add_argument("--ov-precision", default=PRECISIONS[0], choices=PRECISIONS,
                       help=f"{OV_PRECISION_HELP} (default: %(default)s)")
    group.add_argument("--ov-kv-cache-gb", type=int, default=KV_CACHE_GB,
                       help=f"{OV_KV_CACHE_HELP} (default: %(default)s)")


def add_early_stop_arg(parser: Any) -> None:
    """``--ov-early-stop`` on an argparse parser: the experiment's switch in the benchmark
    scripts (``OpenVINOBackend(early_stop=...)``; off by default, README "Speed and
    memory")."""
    import argparse

    parser.add_argument("--ov-early-stop", action=argparse.BooleanOptionalAction, default=False,
                        help="openvino: step the pipeline here and end a running completion "
                             "once a loop has begun (an experiment; default: %(default)s)")


class OpenVINOBackend(LocalModelBackend):
    """OpenVINO GenAI ``ContinuousBatchingPipeline`` on the exported GGUF file, greedy."""

    name = "openvino"
    kv_block_tokens = 32
    """Tokens per block of the paged KV cache on CPU (the CPU plugin's choice; OpenVINO GenAI
    2026.4's Python API does not expose it). The prefix cache keeps whole blocks, so the
    tokens a problem's span prompts share past the last full block are computed again for
    every span (``benchmarks/decompose.py --breakdown`` counts them)."""

    def __init__(self, model: str | None = None, adapter: str | None = "auto",
                 weights: str = "int8", export: str | None = None, threads: int | None = None,
                 batch_size: int = 32, kv_cache_gb: int = KV_CACHE_GB, precision: str = "f32",
                 max_batched_tokens: int = 1024, prefix_warmup: bool = True,
                 early_stop: bool = False, **kwargs: Any) -> None:
        from gsrm.openvino_export import WEIGHT_FORMATS

        if weights not in WEIGHT_FORMATS:
            raise ValueError(f"unknown weight format {weights!r}; choose one of {WEIGHT_FORMATS}")
        if precision not in PRECISIONS:
            raise ValueError(f"unknown precision {precision!r}; choose one of {PRECISIONS}")
        if kv_cache_gb != int(kv_cache_gb) or kv_cache_gb < 1:
            raise ValueError(f"kv_cache_gb must be a whole number of GB >= 1, got {kv_cache_gb!r}")
        super().__init__(model=model, adapter=adapter, **kwargs)
        self.weights = weights
        self.export = export
        self.threads = threads
        self.batch_size = batch_size
        self.kv_cache_gb = int(kv_cache_gb)
        self.precision = precision
        self.max_batched_tokens = max_batched_tokens
        # on by default: its prefix cache reuses only blocks an earlier step computed
        # (gsrm.describe.warm_prefixes; README, "Speed and memory")
        self.prefix_warmup = prefix_warmup
        # stop a completion once a loop has begun (``_step``): off by default, an experiment
        # slower on large batches (README, "Speed and memory"); off: the pipeline's generate
        self.early_stop = early_stop
        self._request_id = 0
        self._pipe: Any = None
        self.resets = 0  # pipelines dropped by ``reset``

    @property
    def model_id(self) -> str:
        return f"{super().model_id}@openvino-{self.weights}-{self.precision}"

    def export_dir(self) -> Path:
        """The export folder: ``export`` when given, else the cache folder for this model,
        adapter and weight format (``gsrm.openvino_export.export_dir``)."""
        if self.export:
            return Path(self.export).expanduser()
        from gsrm.openvino_export import export_dir

        return export_dir(self.model_path, self.adapter, self.weights)

    def load(self) -> None:
        if self._pipe is not None:
            return
        try:
            import openvino_genai as og
        except ImportError as exc:
            raise BackendError("the openvino backend needs: pip install openvino-genai") \
                from exc
        from transformers import AutoTokenizer

        from gsrm.openvino_export import MODEL_FILE, ExportError, export

        try:
            folder = self.export_dir()
            if not (folder / MODEL_FILE).is_file():
                if self.export:
                    raise BackendError(f"no {MODEL_FILE} in {folder} (gsrm-export-openvino "
                                       "writes one)")
                export(self.model_path, self.adapter, self.weights)  # once, into the cache
        except ExportError as exc:
            raise BackendError(str(exc)) from exc
        sc = og.SchedulerConfig()
        sc.cache_size = self.kv_cache_gb
        sc.max_num_seqs = self.batch_size
        sc.enable_prefix_caching = True
        sc.max_num_batched_tokens = max(self.max_batched_tokens, self.batch_size)
        props: dict[str, object] = {}
        if self.precision == "f32":
            props["INFERENCE_PRECISION_HINT"] = "f32"
        if self.threads:
            props["INFERENCE_NUM_THREADS"] = int(self.threads)
        try:
            self._pipe = og.ContinuousBatchingPipeline(str(folder / MODEL_FILE), sc, "CPU",
                                                       props)
        except RuntimeError as exc:
            raise BackendError(f"OpenVINO could not load {folder}: {exc}") from exc
        self._tok = AutoTokenizer.from_pretrained(str(folder))

    def reset(self) -> bool:
        """Drop the pipeline (with its KV and prefix cache); the next ``generate`` loads a
        fresh one from the export (a few seconds). Why: after long earlier calls, OpenVINO
        GenAI 2026.4.1's pipeline has returned garbage (much of it with no step) from one
        point of a call on, while a fresh pipeline described the same spans well
        (eval/README.md, "engine fault"); ``gsrm.describe`` resets it before describing
        them again, the evaluation before each group of tasks."""
        if self._pipe is None:
            return False
        self._pipe = None
        self.resets += 1
        return True

    def identity(self) -> dict[str, Any]:
        from gsrm.openvino_export import EXPORT_VERSION

        return {**super().identity(), "weights": self.weights, "export": EXPORT_VERSION,
                "precision": self.precision,
                "max_batched_tokens": self.max_batched_tokens,
                # ending a row changes what shares the others' int8 batch
                **({"early_stop": [EARLY_STOP_EVERY, EARLY_STOP_MIN_NEW]}
                   if self.early_stop else {})}

    def generate(
        self, conversations: Sequence[list[Message]], max_new_tokens: int | None = None,
        stop: Sequence[str] | None = None,
    ) -> list[Generation]:
        if not conversations:
            return []
        self.load()
        return self.generate_ids([self._prompt_ids(c) for c in conversations], max_new_tokens,
                                 stop)

    def generate_ids(
        self, prompts: Sequence[Sequence[int]], max_new_tokens: int | None = None,
        stop: Sequence[str] | None = None,
    ) -> list[Generation]:
        """``generate`` on prompts already tokenized (chat template applied): what
        ``benchmarks/prefix_blocks.py`` uses to give the engine prompts no conversation
        renders (a shared prefix cut where its prompts diverge, padded prompts)."""
        if not prompts:
            return []
        self.load()
        import numpy as np
        import openvino as ov
        import openvino_genai as og

        limit = max_new_tokens or self.max_new_tokens
        cfg = og.GenerationConfig()
        cfg.max_new_tokens = limit
        cfg.do_sample = False
        if stop:
            cfg.stop_strings = set(stop)
            cfg.include_stop_str_in_output = True  # cut by ``finished``, as in every backend
        eos = self._tok.eos_token_id
        if eos is not None:
            cfg.eos_token_id = int(eos)
        tensors = [ov.Tensor(np.asarray([p], dtype=np.int64)) for p in prompts]
        try:
            if self.early_stop and self.stop_repeats:
                completions = self._step(tensors, cfg, stop)
            else:
                completions = [list(out.m_generation_ids[0]) if out.m_generation_ids else []
                               for out in self._pipe.generate(tensors, [cfg] * len(tensors))]
        except RuntimeError as exc:
            raise BackendError(f"generation failed: {exc}") from exc
        results = []
        for prompt, ids in zip(prompts, completions, strict=True):
            if ids and eos is not None and ids[-1] == eos:
                ids = ids[:-1]
                at_budget = False
            else:
                at_budget = len(ids) >= limit
            text = self._tok.decode(ids, skip_special_tokens=True)
            results.append(self.finished(text, len(prompt), len(ids), at_budget, stop))
        return results

    def _step(self, tensors: Sequence[Any], cfg: Any, stop: Sequence[str] | None,
              ) -> list[list[int]]:
        """Completion ids of every prompt, the pipeline stepped here: every
        ``EARLY_STOP_EVERY`` steps each running completion with new tokens and at least
        ``EARLY_STOP_MIN_NEW`` is asked ``should_stop`` and ended when a loop has begun, so a
        looping span need not decode to its budget while its trace waits for it. The
        safeguards cut the kept text where they cut a longer completion; with int8 weights,
        other completions' texts can change with the batch that ending a row leaves (as they
        do with any batch)."""
        from gsrm.backends.safeguards import should_stop

        handles = []
        for tensor in tensors:
            self._request_id += 1
            handles.append(self._pipe.add_request(self._request_id, tensor, cfg))
        ids: list[list[int]] = [[] for _ in handles]

        def drain(i: int) -> None:  # what the engine has produced for request i so far
            while handles[i].can_read():
                for out in handles[i].read().values():
                    ids[i].extend(out.generated_ids)

        running = set(range(len(handles)))
        steps = 0
        try:
            while self._pipe.has_non_finished_requests():
                self._pipe.step()
                steps += 1
                if steps % EARLY_STOP_EVERY:
                    continue
                for i in list(running):
                    before = len(ids[i])
                    drain(i)
                    if handles[i].get_status().name != "RUNNING":
                        running.discard(i)
                    elif len(ids[i]) >= max(EARLY_STOP_MIN_NEW, before + 1) and should_stop(
                            self._tok.decode(ids[i], skip_special_tokens=True), stop, True):
                        handles[i].stop()
                        running.discard(i)
        except BaseException:
            for i in running:  # leave no request behind in the pipeline
                handles[i].stop()
            raise
        for i in range(len(handles)):
            drain(i)
        return ids
