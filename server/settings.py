"""Server settings: one pydantic-settings class, read from ``GSRM_*`` variables and CLI flags.

Why one class for both: every knob of ``gsrm-serve`` is declared once, with its help text; the
environment (``GSRM_MAX_BATCH=32``) and the command line (``--max-batch 32``) are two ways of
setting the same field, and ``gsrm-serve --help`` is generated from the fields, so it always
lists all of them. Precedence: CLI flag > environment variable > default.

Example::

    >>> from server.settings import Settings, parse_settings
    >>> parse_settings(["--port", "9000", "--judge", "lexical"], env={}).port
    9000
    >>> Settings().host
    '127.0.0.1'
"""

from __future__ import annotations

import argparse
import os
import types
import typing
from collections.abc import Mapping, Sequence
from typing import Any, Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from gsrm.backends.openvino import (
    KV_CACHE_GB,
    OV_KV_CACHE_HELP,
    OV_PRECISION_HELP,
    OV_WEIGHTS_HELP,
    Precision,
)
from gsrm.openvino_export import WeightFormat
from gsrm.validation import GenBatchSize, MaxInputTokens, MaxNewTokens, PromptLookup, Threads

ENV_PREFIX = "GSRM_"

#: groups for ``--help``: field name -> group title (fields not listed go to "server")
_GROUPS: dict[str, str] = {}


def _group(title: str, *names: str) -> None:
    for n in names:
        _GROUPS[n] = title


_group("decomposition model", "backend", "model", "adapter", "backend_url", "backend_api_key",
       "span_format", "max_new_tokens", "max_input_tokens", "shots", "gen_batch_size",
       "prompt_lookup", "device", "dtype", "threads", "ov_weights", "ov_precision",
       "ov_kv_cache_gb", "prefix_warmup")
_group("judge and reward", "judge", "judge_url", "judge_model", "judge_api_key", "mode",
       "coverage", "cache_size", "describe_steps")
_group("batching and queue", "batch_window_ms", "max_batch", "max_queue", "request_timeout_s",
       "retry_after_s")
_group("request limits", "max_body_bytes", "max_items", "max_reasoning_chars", "max_steps",
       "truncate")


class Settings(BaseSettings):
    """Everything ``gsrm-serve`` can be told; see ``gsrm-serve --help``."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore",
                                      validate_default=True)

    # ---------------------------------------------------------------- server
    host: str = Field("127.0.0.1", description="interface to bind (loopback by default; "
                      "use 0.0.0.0 only behind --api-key or a trusted network)")
    port: int = Field(8000, ge=0, le=65535, description="TCP port (0: any free port)")
    api_key: str | None = Field(None, description="if set, every endpoint except /health, "
                                   "/metrics and the docs needs 'Authorization: Bearer <key>'")
    served_model_name: str = Field("gsrm", min_length=1, description="model id reported by "
                                   "/v1/models and accepted in the 'model' field of requests")
    log_level: Literal["critical", "error", "warning", "info", "debug"] = Field(
        "info", description="uvicorn and gsrm log level")
    graceful_timeout_s: float = Field(30.0, ge=0, description="on SIGINT/SIGTERM, seconds to "
                                      "let in-flight requests finish before closing them")

    # ---------------------------------------------------------------- decomposition model
    backend: str | None = Field(None, description="decomposition generator: openvino (the "
                                "default on the CPU), transformers (the default when --device "
                                "names a GPU), openai, vllm or sentences (model-free, cannot "
                                "chat)")
    model: str | None = Field(None, description="HF model folder or hub id (transformers, "
                                 "vllm) or served model name (openai); default: the embedded "
                                 "SmolLM2-135M-Instruct")
    adapter: str | None = Field("auto", description="peft LoRA adapter folder merged at load, "
                                "a shipped adapter name, or 'none'; 'auto': the shipped "
                                "fine-tuned adapter on the embedded base model")
    backend_url: str | None = Field(None, description="OpenAI-compatible /v1 URL for the "
                                       "openai backend")
    backend_api_key: str | None = Field(None, description="API key for --backend-url")
    span_format: str = Field("tags", description="openai: the describer format the served "
                             "model was trained on (the local backends read it from their "
                             "adapter; describer-qa: qa, describer-pqa-brief: pqa, describer: "
                             "tags); 'auto': "
                             "the shipped default describer's (served merged: with --shots 0)")
    # the limits are gsrm.validation's annotated types: the `gsrm` CLI flags check the same
    max_new_tokens: MaxNewTokens = 1024
    max_input_tokens: MaxInputTokens = 6144
    shots: str | None = Field(None, description="few-shot domains, comma-separated "
                                 "(math,code,science,puzzle), or a count; default: none with an "
                                 "adapter, else math,puzzle")
    gen_batch_size: GenBatchSize = 8
    prompt_lookup: PromptLookup = 0
    device: str = Field("cpu", description="torch device (transformers)")
    dtype: Literal["float32", "bfloat16", "float16"] = Field("float32",
                                                            description="torch dtype (transformers)")
    threads: Threads = None
    ov_weights: WeightFormat = Field("int8", description=OV_WEIGHTS_HELP)
    ov_precision: Precision = Field("f32", description=OV_PRECISION_HELP)
    ov_kv_cache_gb: int = Field(KV_CACHE_GB, ge=1, description=OV_KV_CACHE_HELP)
    prefix_warmup: bool = Field(True, description="openvino: prefill each problem's prompt once "
                                "before the describer's batch (faster; "
                                "gsrm.describe.warm_prefixes)")
    decomposer: Literal["two-stage", "single-pass"] = Field(
        "two-stage", description="two-stage: the trained segmenter finds the steps and the LM "
        "describes each; single-pass: the LM writes the whole decomposition")
    segmenter: str = Field("trained", description="step segmenter for two-stage: 'trained', a "
                           "folder of one trained with `gsrm-train segmenter`, 'units' or 'cues'")

    # ---------------------------------------------------------------- judge and reward
    judge: str = Field("embedding", description="step matcher: embedding, lexical or llm")
    judge_url: str | None = Field(None, description="OpenAI-compatible /v1 URL (llm judge)")
    judge_model: str = Field("default", description="model name for the llm judge")
    judge_api_key: str | None = Field(None, description="API key for --judge-url")
    mode: Literal["paper", "normalized"] = Field("paper", description="default reward mode: "
                                                 "paper (sum of step rewards) or normalized "
                                                 "(divided by the teacher's step count)")
    coverage: bool = Field(False, description="add the coverage term min(1, n_student/"
                           "n_teacher) by default")
    cache_size: int = Field(4096, gt=0, description="decompositions kept in the content-hash "
                            "LRU cache")
    describe_steps: Literal["all", "read"] = Field(
        "all", description="all: describe every student step (the response's student structure "
        "is the whole decomposition); read: only the steps the reward reads (none past the "
        "teacher's count or after the first mismatched meta-reasoning: gsrm.readonly), faster, "
        "the same reward")

    # ---------------------------------------------------------------- batching and queue
    batch_window_ms: float = Field(5.0, ge=0, description="how long the batcher waits after the "
                                   "first queued item for more before running a batch (only "
                                   "while more requests are arriving; a lone request is not "
                                   "delayed)")
    max_batch: int = Field(64, gt=0, description="most pairs (or chat conversations) per "
                           "backend batch; a single larger request still runs as one batch")
    max_queue: int = Field(4096, gt=0, description="most pairs waiting for the worker; beyond "
                           "it requests get 503 with Retry-After")
    request_timeout_s: float = Field(600.0, gt=0, description="per-request limit (queue wait + "
                                     "work); beyond it the request gets 504")
    retry_after_s: int = Field(1, ge=0, description="Retry-After seconds sent with 503")

    # ---------------------------------------------------------------- request limits
    max_body_bytes: int = Field(16 * 1024 * 1024, gt=0, description="largest request body; "
                                "larger gets 413")
    max_items: int = Field(512, gt=0, description="most pairs (items, text_2 entries, queries) "
                           "per request; more gets 413")
    max_reasoning_chars: int = Field(100_000, gt=0, description="longest reasoning (and "
                                     "problem) in characters, for text or the sum of a step "
                                     "list's parts; longer gets 413 unless truncation is asked")
    max_steps: int = Field(512, gt=0, description="most steps in a pre-decomposed side; more "
                           "gets 413 unless truncation is asked")
    truncate: bool = Field(False, description="default for options.truncate: cut over-long "
                           "input to the limits (flagged in the response) instead of 413")

    access_log: bool = Field(False, description="log every request (uvicorn access log); off "
                             "by default: an RL trainer sends thousands per step")

    @field_validator("backend", "span_format", "judge")
    @classmethod
    def _registered(cls, v: str | None, info: ValidationInfo) -> str | None:
        """A name from its registry (imported here: no import-time side effects)."""
        from gsrm.backends import BACKENDS
        from gsrm.judges import JUDGES
        from gsrm.spanformat import SPAN_FORMAT_CHOICES

        known = {"backend": BACKENDS, "span_format": SPAN_FORMAT_CHOICES,
                 "judge": JUDGES}[str(info.field_name)]
        if v is not None and v not in known:
            what = str(info.field_name).replace("_", " ")
            raise ValueError(f"unknown {what} {v!r}; choose one of {sorted(known)}")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> Settings:
        if self.max_items > self.max_queue:
            raise ValueError(f"max_items ({self.max_items}) must not exceed max_queue "
                             f"({self.max_queue}), or a full-size request could never be queued")
        return self


# --------------------------------------------------------------------------- CLI
def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _unwrap(annotation: Any) -> tuple[Any, bool]:
    """(inner type, optional) for ``X | None`` / ``Optional[X]``."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, getattr(types, "UnionType", ())):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            return _unannotated(args[0]), True
    return _unannotated(annotation), False


def _unannotated(annotation: Any) -> Any:
    """``X`` for ``Annotated[X, ...]`` (a constrained type shared from ``gsrm.validation``)."""
    if typing.get_origin(annotation) is typing.Annotated:
        return typing.get_args(annotation)[0]
    return annotation


def build_parser(prog: str = "gsrm-serve") -> argparse.ArgumentParser:
    """An argparse parser with one flag per ``Settings`` field (help = the field's description)."""
    parser = argparse.ArgumentParser(
        prog=prog,
        description="OpenAI-compatible GSRM scoring server. Every flag can also be set with an "
                    f"environment variable {ENV_PREFIX}<FLAG_NAME> (e.g. --max-batch -> "
                    f"{ENV_PREFIX}MAX_BATCH); a flag wins over the variable.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        argument_default=argparse.SUPPRESS,
    )
    groups: dict[str, Any] = {}
    for name, field in Settings.model_fields.items():
        title = _GROUPS.get(name, "server")
        group = groups.get(title) or groups.setdefault(title, parser.add_argument_group(title))
        env = f"{ENV_PREFIX}{name.upper()}"
        default = field.default
        shown = "(unset)" if default is None else default
        if name.endswith("api_key") and default is None:
            shown = "(unset)"
        help_text = f"{field.description} [env {env}; default: {shown}]".replace("%", "%%")
        inner, _ = _unwrap(field.annotation)
        kwargs: dict[str, Any] = {"help": help_text, "dest": name}
        if inner is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        elif typing.get_origin(inner) is Literal:
            kwargs["choices"] = list(typing.get_args(inner))
        elif inner in (int, float):
            kwargs["type"] = inner
        else:
            kwargs["type"] = str
        if inner is not bool:
            kwargs["metavar"] = name.upper()
        group.add_argument(_flag(name), **kwargs)
    # the default formatter would print "(default: ==SUPPRESS==)"; our help carries the default
    parser.formatter_class = argparse.HelpFormatter
    return parser


def parse_settings(argv: Sequence[str] | None = None,
                   env: Mapping[str, str] | None = None) -> Settings:
    """Settings from CLI flags over environment variables (``env``: default ``os.environ``).

    Raises ``SystemExit(2)`` with argparse's message for a bad flag, and pydantic's
    ``ValidationError`` for a bad value from either source.
    """
    parser = build_parser()
    given = vars(parser.parse_args(list(argv) if argv is not None else None))
    source = os.environ if env is None else env
    from_env = {k[len(ENV_PREFIX):].lower(): v for k, v in source.items()
                if k.upper().startswith(ENV_PREFIX)
                and k[len(ENV_PREFIX):].lower() in Settings.model_fields}
    if env is None:
        return Settings(**given)  # pydantic-settings reads os.environ itself
    return Settings.model_validate({**from_env, **given})
