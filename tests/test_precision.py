"""bf16 in training only where the device runs it natively (``training.precision``)."""

from __future__ import annotations

import pytest

from training import precision


@pytest.mark.parametrize(("requested", "cuda", "cpu_bf16", "gpu_bf16", "want"), [
    (True, False, True, False, True),    # a CPU with AVX512-BF16 / AMX: the fast path
    (True, False, False, False, False),  # AVX2 only: emulated bf16, float32 instead
    (False, False, True, False, False),  # not asked for
    (True, True, False, True, True),     # a GPU with bf16, whatever the host CPU has
    (True, True, True, False, False),    # an old GPU without it
    (False, True, True, True, False),
])
def test_bf16_is_used_only_where_the_device_has_it(monkeypatch: pytest.MonkeyPatch,
                                                   requested: bool, cuda: bool, cpu_bf16: bool,
                                                   gpu_bf16: bool, want: bool) -> None:
    import torch

    monkeypatch.setattr(precision, "cpu_has_bf16", lambda: cpu_bf16)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: gpu_bf16)
    assert precision.use_bf16(requested, cuda) is want


def test_cpu_has_bf16_asks_onednn() -> None:
    import torch

    real = precision.cpu_has_bf16()
    assert isinstance(real, bool)
    assert real is bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
