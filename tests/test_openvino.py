"""The openvino backend and its one-time export: cache naming, clear errors, and (slow, where
the extra and an export exist) the same describer steps as the transformers backend."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from gsrm.backends import BackendError, get_backend
from gsrm.cli import backend_kwargs, build_parser
from gsrm.openvino_export import IR_FILE, ir_dir, main
from gsrm.prompts import build_messages

HAVE_OV = importlib.util.find_spec("openvino_genai") is not None


def _adapter(folder: Path, weights: bytes) -> str:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "adapter_config.json").write_text("{}")
    (folder / "adapter_model.safetensors").write_bytes(weights)
    return str(folder)


def test_ir_folder_names_model_adapter_content_and_weights(tmp_path: Path) -> None:
    a = _adapter(tmp_path / "a", b"one")
    b = _adapter(tmp_path / "b", b"one")  # same content elsewhere: the same export
    c = _adapter(tmp_path / "c", b"two")  # retrained: a new export
    root = tmp_path / "cache"
    assert ir_dir(None, a, "int8", root) == ir_dir(None, b, "int8", root)
    assert ir_dir(None, a, "int8", root) != ir_dir(None, c, "int8", root)
    assert ir_dir(None, a, "int8", root) != ir_dir(None, a, "fp32", root)
    assert ir_dir(None, None, "fp32", root).name == "smollm2-135m-instruct-base-fp32"
    with pytest.raises(ValueError, match="weight format"):
        ir_dir(None, None, "int4", root)


def test_export_without_an_export_environment_says_how_to_make_one(tmp_path, capsys,
                                                                  monkeypatch) -> None:
    monkeypatch.setenv("GSRM_CACHE_DIR", str(tmp_path))  # no export there yet
    assert main(["--python", str(tmp_path / "no" / "python")]) == 2
    assert "--make-env" in capsys.readouterr().err


def test_backend_without_an_export_is_a_clear_error(tmp_path: Path) -> None:
    b = get_backend("openvino", ir=str(tmp_path))
    with pytest.raises(BackendError) as err:
        b.generate([build_messages("p", "2 + 3 = 5.", ())], 16)
    # without the extra: how to install it; with it: where the IR was looked for
    assert ("gsrm[openvino]" in str(err.value)) != HAVE_OV
    assert (str(tmp_path) in str(err.value)) == HAVE_OV


@pytest.mark.skipif(not HAVE_OV, reason="openvino extra not installed")
def test_backend_without_a_cached_export_names_the_export_command(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("GSRM_CACHE_DIR", str(tmp_path))
    with pytest.raises(BackendError, match=r"gsrm-export-openvino --adapter none --weights int8"):
        get_backend("openvino", adapter="none", weights="int8").load()


def test_cli_builds_the_openvino_backend_from_its_flags() -> None:
    args = build_parser().parse_args(["decompose", "x.json", "--backend", "openvino",
                                      "--ov-weights", "int8", "--threads", "2"])
    kw = backend_kwargs(args)
    assert (kw["weights"], kw["precision"], kw["threads"], kw["adapter"]) \
        == ("int8", "f32", 2, "auto")
    b = get_backend("openvino", **kw)
    assert b.identity()["weights"] == "int8" and "openvino-int8-f32" in b.model_id
    # every setting that changes the output is in the cache identity
    for change in ({"weights": "fp32"}, {"precision": "auto"}):
        assert b.identity() != get_backend("openvino", **{**kw, **change}).identity()
    with pytest.raises(ValueError, match="precision"):
        get_backend("openvino", precision="bf16")


SPANS = [  # (problem, span): steps with one clear result each
    ("Janet has 16 eggs. She eats 3 and bakes 4. How many are left?",
     "She has 16 - 3 - 4 = 9 eggs left."),
    ("A farmer has 3 crates of 24 eggs. How many eggs?", "3 crates hold 3 * 24 = 72 eggs."),
    ("Tom reads 12 pages a day. How many in a week?", "In 7 days he reads 12 * 7 = 84 pages."),
]


@pytest.mark.slow
@pytest.mark.skipif(not HAVE_OV, reason="openvino extra not installed (pip install "
                    "'gsrm[openvino]')")
def test_openvino_default_gives_the_transformers_steps_whatever_the_batch() -> None:
    from gsrm.describe import DESCRIBE_MAX_NEW_TOKENS, DESCRIBE_STOP, first_step
    from gsrm.judges import answer_number

    ov = get_backend("openvino", threads=2)  # fp32 weights, f32 compute: the defaults
    if not (ov.ir_dir() / IR_FILE).is_file():
        pytest.skip(f"no fp32 export at {ov.ir_dir()} (gsrm-export-openvino)")
    pt = get_backend("transformers", threads=2)
    convs = [build_messages(p, s, ()) for p, s in SPANS]
    got = [g.text for g in ov.generate(convs, DESCRIBE_MAX_NEW_TOKENS, stop=DESCRIBE_STOP)]
    ref = [g.text for g in pt.generate(convs, DESCRIBE_MAX_NEW_TOKENS, stop=DESCRIBE_STOP)]
    assert got == ref  # the same text as the torch float32 path
    alone = [ov.generate([c], DESCRIBE_MAX_NEW_TOKENS, stop=DESCRIBE_STOP)[0].text
             for c in convs]
    assert alone == got  # and the same alone as in a batch
    steps = [first_step(t)[0] for t in got]
    assert all(s.is_complete for s in steps)
    assert [answer_number(s.answer) for s in steps] == [9.0, 72.0, 84.0]
