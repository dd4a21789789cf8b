"""Whether a training run can use bf16 on the machine it runs on.

Why: the presets ask for bf16 (autocast on a CPU, bf16 weights on a GPU) because on a CPU
with native bf16 instructions (AVX512-BF16 or AMX) it is the fast path. On a CPU without
them (an AVX2-only cloud machine) oneDNN emulates bf16, and a LoRA step of the describer
preset takes many times as long as in float32 (``benchmarks/train_step.py`` prints both; the
README has the figures), so a preset's bf16 is a request that this module grants only where the
hardware has it; the run's ``run.json`` / ``train.json`` records what was used.
"""

from __future__ import annotations


def cpu_has_bf16() -> bool:
    """Whether this CPU has native bf16 matrix instructions (oneDNN's own test)."""
    import torch

    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # a torch built without oneDNN
        return False


def use_bf16(requested: bool, cuda: bool) -> bool:
    """bf16 when ``requested`` and the device runs it natively: a GPU that supports it, or a
    CPU with bf16 instructions; float32 otherwise."""
    if not requested:
        return False
    if cuda:
        import torch

        return bool(torch.cuda.is_bf16_supported())
    return cpu_has_bf16()


__all__ = ["cpu_has_bf16", "use_bf16"]
