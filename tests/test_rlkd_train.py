"""rlkd-train: data preparation, presets and flags (fast); real TRL GRPO runs (slow).

The slow tests run TRL's ``GRPOTrainer`` for two steps on the embedded SmolLM2-135M student
with the four paper rewards, the GSRM one through a live ``gsrm-serve`` app (model-free
``sentences`` backend, ``lexical`` judge, so the GSRM costs nothing) — then resume from the
checkpoint, and start ``--mode rlkd`` from a LoRA adapter with ``--gsrm local``. The training
problems are four made-up GSM8K-style lines written to a temporary file.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from rl_client.train import (
    PRESETS,
    build_parser,
    load_gsm8k,
    main,
    resolve,
    sft_rows,
    teacher_from_solution,
)

PROBLEMS = [
    {"question": "Tom has 3 bags with 4 apples each. He eats 2. How many apples are left?",
     "answer": "He has 3*4 = <<3*4=12>>12 apples.\nAfter eating 2 he has 12-2 = <<12-2=10>>10."
               "\n#### 10"},
    {"question": "A pen costs $2 and a book costs $5. How much do 2 pens and 1 book cost?",
     "answer": "Two pens cost 2*2 = <<2*2=4>>4 dollars.\nWith the book: 4+5 = <<4+5=9>>9."
               "\n#### 9"},
    {"question": "Sam reads 6 pages a day for 5 days. How many pages does he read?",
     "answer": "He reads 6*5 = <<6*5=30>>30 pages.\n#### 30"},
    {"question": "There are 20 birds; half fly away. How many remain?",
     "answer": "Half of 20 is 20/2 = <<20/2=10>>10.\n#### 1,0"},
]


@pytest.fixture
def data(tmp_path: Path) -> Path:
    path = tmp_path / "train.jsonl"
    path.write_text("".join(json.dumps(p) + "\n" for p in PROBLEMS), encoding="utf-8")
    return path


# --------------------------------------------------------------------------- fast
@pytest.mark.parametrize(("solution", "teacher", "answer"), [
    # calculator notes removed, the #### line becomes the answer
    ("A = <<2*3=6>>6.\n#### 6", "A = 6.", "6"),
    # thousands separators removed from the gold answer
    ("Total <<1000+234=1234>>1234\n#### 1,234", "Total 1234", "1234"),
    # no #### line: all of it is the reasoning, no answer
    ("Just text.", "Just text.", ""),
])
def test_teacher_from_solution(solution: str, teacher: str, answer: str) -> None:
    assert teacher_from_solution(solution) == (teacher, answer)


def test_load_gsm8k_rows_and_sft_rows(data: Path) -> None:
    rows = load_gsm8k(data, limit=2, system_prompt="S")
    assert len(rows) == 2
    assert rows[0] == {
        "prompt": [{"role": "system", "content": "S"}, {"role": "user",
                                                        "content": PROBLEMS[0]["question"]}],
        "problem": PROBLEMS[0]["question"],
        "teacher_reasoning": "He has 3*4 = 12 apples.\nAfter eating 2 he has 12-2 = 10.",
        "answer": "10"}
    sft = sft_rows(rows)
    assert sft[1]["completion"][0]["content"] == \
        "<think>Two pens cost 2*2 = 4 dollars.\nWith the book: 4+5 = 9.</think> 9"
    assert sft[1]["prompt"] == rows[1]["prompt"]


@pytest.mark.parametrize("row, message", [
    ({"question": "Q?", "answer": "#### 10"}, "line 2: teacher_reasoning is empty"),
    ({"question": "Q?", "teacher_reasoning": "<think></think>", "final_answer": "1"},
     "line 2: teacher_reasoning is empty: no reasoning before </think>"),
    ({"answer": "1+1 = 2.\n#### 2"}, "line 2: no 'question'"),
])
def test_load_gsm8k_refuses_a_row_with_nothing_to_distil(
        tmp_path: Path, row: dict[str, str], message: str) -> None:
    """Refused when the file is read, naming the line, not when its batch reaches the reward."""
    path = tmp_path / "train.jsonl"
    path.write_text(json.dumps(PROBLEMS[0]) + "\n" + json.dumps(row) + "\n", encoding="utf-8")
    with pytest.raises(ValueError, match=f"train.jsonl {message}"):
        load_gsm8k(path)


def test_presets_and_explicit_flags() -> None:
    gpu = resolve(build_parser().parse_args(["grpo", "--preset", "gpu"]))
    # the paper's GRPO settings (DESIGN.md section 1)
    assert (gpu.num_generations, gpu.lr, gpu.temperature, gpu.beta,
            gpu.max_completion_length) == (4, 5e-5, 0.7, 0.04, 4096)
    tiny = resolve(build_parser().parse_args(["grpo", "--preset", "cpu-tiny", "--lr", "1e-4",
                                              "--beta", "0"]))
    assert (tiny.lr, tiny.beta, tiny.max_steps) == (1e-4, 0.0, 2)  # explicit flags win
    sft = resolve(build_parser().parse_args(["sft", "--preset", "cpu-tiny"]))
    assert sft.max_length == PRESETS["cpu-tiny"]["max_length"]
    assert not hasattr(sft, "num_generations")


def test_rlkd_needs_an_init_checkpoint(data: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["grpo", "--mode", "rlkd", "--data", str(data)]) == 2
    assert "--init" in capsys.readouterr().err


def test_missing_data_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                       ) -> None:
    assert main(["sft", "--data", str(tmp_path / "nope.jsonl")]) == 2
    assert "nope.jsonl not found" in capsys.readouterr().err


def test_grpo_config_carries_the_reward_weights() -> None:
    pytest.importorskip("trl")
    from rl_client.train import grpo_config

    # --no-bf16: this test also runs on CPU-only machines, where bf16 training is refused
    args = resolve(build_parser().parse_args(["grpo", "--preset", "gpu", "--weights",
                                              "gsrm=5", "--output-dir", "/tmp/x", "--no-bf16"]))
    names = ["accuracy", "format", "tag_count", "gsrm"]
    cfg = grpo_config(args, names)
    assert cfg.reward_weights == [15.0, 10.0, 10.0, 5.0]
    assert (cfg.num_generations, cfg.beta, cfg.temperature) == (4, 0.04, 0.7)


@pytest.mark.parametrize(("flags", "expected", "backend"), [
    # nothing given: the default engine on the CPU, its own defaults
    ([], None, "openvino"),
    # the GPU check's in-process LM GSRM: device, dtype and token budget reach the backend
    (["--gsrm-device", "cuda", "--gsrm-dtype", "bfloat16", "--gsrm-max-new-tokens", "256"],
     {"device": "cuda", "dtype": "bfloat16", "max_new_tokens": 256}, "transformers"),
    # and the rows its two-stage decomposer describes together
    (["--gsrm-device", "cuda", "--gsrm-batch-size", "128"], {"device": "cuda", "batch_size": 128},
     "transformers"),
    # --gsrm-model alone, as before
    (["--gsrm-model", "/m"], {"model": "/m"}, "openvino"),
    (["--gsrm-backend", "transformers"], None, "transformers"),
])
def test_local_gsrm_backend_flags(flags: list[str], expected: dict[str, Any] | None,
                                  backend: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from rl_client.train import gsrm_kwargs

    monkeypatch.delenv("GSRM_DEVICE", raising=False)
    args = resolve(build_parser().parse_args(["grpo", "--gsrm", "local", *flags]))
    kw = gsrm_kwargs(args)
    assert kw.get("backend_kwargs") == expected
    assert kw["backend"] == backend and kw["judge"] == "embedding"


@pytest.mark.parametrize(("backend", "decomposer"), [
    # an LM backend: the GSRM's default, the trained segmenter then the LM per span
    ("transformers", "two-stage"),
    # a rule backend writes whole decompositions
    ("sentences", "single-pass"),
])
def test_grpo_summary_says_which_decomposer_the_local_gsrm_ran(backend: str,
                                                               decomposer: str) -> None:
    from rl_client.rewards import get_reward_funcs
    from rl_client.train import gsrm_kwargs, local_gsrm_info

    args = resolve(build_parser().parse_args(["grpo", "--gsrm", "local", "--gsrm-backend",
                                              backend, "--gsrm-judge", "lexical"]))
    funcs = get_reward_funcs(["accuracy", "gsrm"], gsrm_kwargs=gsrm_kwargs(args))
    info = local_gsrm_info(funcs)  # nothing is loaded: the backend is lazy
    assert info is not None and info["decomposer"] == decomposer
    assert info["backend"] == backend and info["decompositions"] == 0
    assert ("segmenter" in info) is (decomposer == "two-stage")
    if decomposer == "two-stage":
        assert info["segmenter"]["segmenter"] == "trained" and info["segmenter"]["weights"]
    assert local_gsrm_info(get_reward_funcs(["accuracy"])) is None


def test_time_budget_stops_before_the_step_that_would_overrun() -> None:
    from rl_client.train import TimeBudget

    # steps of 40 s (the first, with warm-up, 60 s) under a 150 s budget: after step 2 (100 s)
    # the next would end at 140 s, inside; after step 3 (140 s) it would end at 180 s: stop
    ticks = iter([0.0, 60.0, 100.0, 140.0])
    budget = TimeBudget(150.0, clock=lambda: next(ticks))
    budget.start()
    assert [budget.step_done() for _ in range(3)] == [False, False, True]
    assert budget.stopped and budget.elapsed == 140.0


# --------------------------------------------------------------------------- slow
def _student_or_skip() -> None:
    from gsrm.weights import WeightsNotFoundError, default_model_dir

    try:
        default_model_dir()
    except WeightsNotFoundError as exc:
        pytest.skip(str(exc))


@contextmanager
def gsrm_server() -> Iterator[str]:
    """gsrm-serve's app with the model-free backend and lexical judge, on loopback."""
    pytest.importorskip("fastapi")
    uvicorn = pytest.importorskip("uvicorn")
    from gsrm.model import GSRM
    from server.app import create_app
    from server.settings import Settings

    app = create_app(Settings(backend="sentences", judge="lexical", graceful_timeout_s=5),
                     gsrm=GSRM.from_names(backend="sentences", judge="lexical"))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "server did not start"
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{server.servers[0].sockets[0].getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(15)


def _metrics(out: Path) -> list[dict[str, Any]]:
    lines = (out / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if "loss" in r]  # per-step records


@pytest.mark.slow
def test_grpo_two_steps_with_the_gsrm_endpoint(data: Path, tmp_path: Path) -> None:
    _student_or_skip()
    out = tmp_path / "run"
    with gsrm_server() as url:
        rc = main(["grpo", "--preset", "cpu-tiny", "--mode", "rlkd-zero", "--data", str(data),
                   "--output-dir", str(out), "--gsrm", url, "--max-completion-length", "16"])
    assert rc == 0
    steps = _metrics(out)
    assert [r["step"] for r in steps] == [1, 2]
    for r in steps:  # every component logged per step, and the weighted total
        for name in ("accuracy", "format", "tag_count", "gsrm"):
            assert f"rewards/{name}/mean" in r
        assert r["gsrm/skipped"] == 0.0
        assert r["reward"] == pytest.approx(sum(
            w * r[f"rewards/{n}/mean"] for n, w in
            [("accuracy", 15), ("format", 10), ("tag_count", 10), ("gsrm", 15)]), abs=1e-3)
    assert (out / "checkpoint-2" / "adapter_model.safetensors").exists()
    assert (out / "final" / "adapter_config.json").exists()


@pytest.mark.slow
def test_grpo_resume_and_rlkd_from_an_adapter(data: Path, tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    _student_or_skip()
    out = tmp_path / "run"
    local = ["--gsrm", "local", "--gsrm-backend", "sentences", "--gsrm-judge", "lexical",
             "--max-completion-length", "12", "--data", str(data)]
    assert main(["grpo", "--preset", "cpu-tiny", "--max-steps", "1", "--save-steps", "1",
                 "--output-dir", str(out), *local]) == 0
    assert main(["grpo", "--preset", "cpu-tiny", "--max-steps", "2", "--save-steps", "1",
                 "--output-dir", str(out), "--resume", *local]) == 0
    assert [r["step"] for r in _metrics(out)] == [1, 2]  # step 2 continued from checkpoint-1
    capsys.readouterr()
    # RLKD proper: start from an adapter checkpoint (merged into its base), with a fresh LoRA
    assert main(["grpo", "--preset", "cpu-tiny", "--mode", "rlkd", "--init",
                 str(out / "final"), "--max-steps", "1", "--output-dir",
                 str(tmp_path / "rlkd"), "--rewards", "gsrm,format", *local]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["steps"] == 1 and summary["weights"] == [15.0, 10.0]
    # the RLKD adapter records the SFT student it sits on, and loads with it merged first
    from rl_client.train import INIT_MARKER, load_student

    marker = tmp_path / "rlkd" / "final" / INIT_MARKER
    assert json.loads(marker.read_text())["init"] == str((out / "final").resolve())
    model, _ = load_student(str(tmp_path / "rlkd" / "final"))
    assert not hasattr(model, "peft_config")  # both adapters merged into plain weights
