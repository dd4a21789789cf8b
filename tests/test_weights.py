"""gsrm.weights: the ``GSRM_WEIGHTS`` setting (fast, with a stand-in converter; one slow case).

The fast cases never load a model: ``convert_gguf`` is replaced by a function that writes the
two files ``default_model_dir`` looks for, and counts its calls, so the tests can say exactly
when a conversion happens and where it lands. The slow case converts the real GGUF through the
setting and checks it decodes greedily exactly like the package's default path.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from gsrm import weights
from gsrm.weights import WEIGHTS_ENV, WeightsNotFoundError


@pytest.fixture
def conversions(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """Replace the GGUF conversion by a stand-in; the list records each source converted."""
    seen: list[Path] = []

    def fake_convert(src: Path, out_dir: Path) -> None:
        seen.append(src)
        (out_dir / "model.safetensors").write_bytes(b"weights of " + src.read_bytes()[:8])
        (out_dir / "tokenizer.json").write_text("{}")

    monkeypatch.setattr(weights, "convert_gguf", fake_convert)
    return seen


def gguf(path: Path, body: bytes = b"\x03\x00\x00\x00rest") -> Path:
    path.write_bytes(weights.GGUF_MAGIC + body)
    return path


def model_folder(path: Path) -> Path:
    path.mkdir()
    (path / "config.json").write_text('{"model_type": "llama"}')
    (path / "model.safetensors").write_bytes(b"x")
    return path


def test_unset_or_blank_means_the_package(monkeypatch: pytest.MonkeyPatch) -> None:
    # blank counts as unset, so `GSRM_WEIGHTS= cmd` does not turn into an error
    for value in (None, "", "  "):
        if value is None:
            monkeypatch.delenv(WEIGHTS_ENV, raising=False)
        else:
            monkeypatch.setenv(WEIGHTS_ENV, value)
        assert weights.weights_override() is None


def bad_value(tmp: Path, kind: str) -> Path:
    """A path that GSRM_WEIGHTS must refuse, of the given kind."""
    if kind == "missing":
        return tmp / "nope.gguf"
    if kind == "not-gguf":
        (tmp / "model.safetensors").write_bytes(b"\x08\x00\x00")
        return tmp / "model.safetensors"
    folder = tmp / "m"
    folder.mkdir()
    if kind == "no-config":
        (folder / "model.safetensors").write_bytes(b"x")
    else:  # "no-weights"
        (folder / "config.json").write_text("{}")
    return folder


@pytest.mark.parametrize(("kind", "message"), [
    # a path that does not exist is reported, not replaced by the package's model
    ("missing", "no such file or folder"),
    # a file that is not GGUF (here: a safetensors file given instead of its folder)
    ("not-gguf", "not a GGUF file"),
    # a folder without config.json cannot be loaded by from_pretrained
    ("no-config", "lacks config.json"),
    # a folder without weights (e.g. only the tokenizer was copied)
    ("no-weights", r"lacks \*\.safetensors weights"),
])
def test_unusable_values_raise_naming_the_variable(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str, message: str) -> None:
    path = bad_value(tmp_path, kind)
    monkeypatch.setenv(WEIGHTS_ENV, str(path))
    with pytest.raises(WeightsNotFoundError, match=message) as info:
        weights.default_model_dir(tmp_path / "cache")
    assert str(info.value).startswith(f"{WEIGHTS_ENV}={path}")
    with pytest.raises(WeightsNotFoundError):
        weights.default_source()


def test_a_model_folder_is_used_in_place(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                         conversions: list[Path]) -> None:
    folder = model_folder(tmp_path / "smollm2")
    monkeypatch.setenv(WEIGHTS_ENV, str(folder))
    assert weights.default_model_dir(tmp_path / "cache") == folder
    assert weights.default_source() == folder
    assert conversions == [] and not (tmp_path / "cache").exists()  # nothing copied or converted


def test_a_gguf_file_is_converted_once_per_content(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch,
                                                   conversions: list[Path]) -> None:
    cache = tmp_path / "cache"
    first = gguf(tmp_path / "a.gguf")
    monkeypatch.setenv(WEIGHTS_ENV, str(first))
    out = weights.default_model_dir(cache)
    key = weights.content_key(first)
    assert out == cache / "models" / f"{weights.DEFAULT_MODEL_NAME}-{key}"
    assert (out / "model.safetensors").exists() and conversions == [first]
    # the same call again: the cached folder, no second conversion
    assert weights.default_model_dir(cache) == out and conversions == [first]
    # a byte-identical copy elsewhere (a bundle reassembled in another folder) reuses it
    copy = gguf(tmp_path / "copy.gguf")
    monkeypatch.setenv(WEIGHTS_ENV, str(copy))
    assert weights.default_model_dir(cache) == out and conversions == [first]
    # different bytes get their own folder: never the other file's conversion
    other = gguf(tmp_path / "other.gguf", b"\x03\x00\x00\x00different")
    monkeypatch.setenv(WEIGHTS_ENV, str(other))
    out2 = weights.default_model_dir(cache)
    assert out2 != out and conversions == [first, other]
    # the package's own cache folder is untouched by either
    assert not (cache / "models" / weights.DEFAULT_MODEL_NAME).exists()
    assert weights.default_source() == other


def test_content_key_follows_the_bytes(tmp_path: Path) -> None:
    a = gguf(tmp_path / "a.gguf")
    key = weights.content_key(a)
    assert len(key) == 16 and key == weights.content_key(gguf(tmp_path / "b.gguf"))
    gguf(a, b"changed")  # rewritten in place: size and mtime change, so the memo misses
    os.utime(a, ns=(1, 1))
    assert weights.content_key(a) != key


@pytest.mark.slow
def test_the_package_gguf_through_the_setting_decodes_like_the_default(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The real conversion through GSRM_WEIGHTS gives the default model's greedy text."""
    from gsrm.backends import TransformersBackend

    try:
        src = weights.gguf_path()
    except WeightsNotFoundError as exc:
        pytest.skip(str(exc))
    conv = [{"role": "user", "content": "What is 2+3? Answer in one sentence."}]
    monkeypatch.delenv(WEIGHTS_ENV, raising=False)
    default = TransformersBackend(adapter="none", max_new_tokens=16, stop_repeats=False)
    expected = default.generate([conv], 16)[0].text
    monkeypatch.setenv(WEIGHTS_ENV, str(src))
    monkeypatch.setenv("GSRM_CACHE_DIR", str(tmp_path / "cache"))
    converted = weights.default_model_dir()
    assert converted.parent == tmp_path / "cache" / "models"
    carried = TransformersBackend(adapter="none", max_new_tokens=16, stop_repeats=False)
    assert carried.generate([conv], 16)[0].text == expected
