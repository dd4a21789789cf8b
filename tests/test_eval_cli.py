"""``gsrm-eval`` end to end: files written, determinism, cache reuse, compare, exit codes.

Why: the command is what people run; its output must be reproducible (same seed, same
``metrics.json``), a second run must reuse decompositions instead of decoding again, and a
model failure must surface as an error, never as numbers. A small data root is written to
``tmp_path`` so these tests run without ../shared/data; one ``slow`` test runs the default
language model on two items.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import pytest

from eval import systems as systems_mod
from eval.cli import main
from eval.report import compare_reports, format_diffs, load_report
from eval.systems import SystemSpec
from eval.tasks.gsm8k import GSM8KSocratic
from gsrm.backends import Backend, BackendError, Generation, SentenceBackend

DATA = Path(os.environ.get("GSRM_DATA") or
            Path(__file__).resolve().parents[1].parent / "shared" / "data")
RULES = "newline,paragraph,sentences,cue-sentences"
FAST_TASKS = "gsm8k-socratic,prm800k-steps,bbm-steps,annotated-jsonl,prmbench-structure," \
             "reward-sanity"


def write_jsonl(path: Path, rows: list) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    """A miniature of ../shared/data: a few items per data set, same layout and fields."""
    root = tmp_path_factory.mktemp("data")
    filler = {"question": "q", "answer": "x ** y\n#### 1"}
    held = [
        {"question": "Ann has 2 apples and buys 3 more. She eats 1. How many are left?",
         "answer": "How many after buying? ** She has 2 + 3 = <<2+3=5>>5 apples.\n"
                   "How many are left? ** She has 5 - 1 = <<5-1=4>>4 apples left.\n"
                   "What is the answer? ** So the answer is 4.\n#### 4"},
        {"question": "A box holds 6 pens. How many pens are in 4 boxes?",
         "answer": "How many pens? ** 4 boxes hold 4 * 6 = <<4*6=24>>24 pens\n"
                   "Is that all? ** So there are 24 pens.\nAnything else? ** Done.\n#### 24"},
    ]
    write_jsonl(root / "gsm8k" / "test_socratic.jsonl", [filler] * 1000 + held)
    plain = [{"question": h["question"],
              "answer": "\n".join(line.split(" ** ", 1)[-1] for line in
                                  h["answer"].splitlines())} for h in held]
    write_jsonl(root / "gsm8k" / "test.jsonl", [filler] * 1000 + plain)
    write_jsonl(root / "bigbench_mistake" / "word_sorting.jsonl",
                [{"input": "sort b a", "steps": ["The words are b and a.", "So a comes first."]}])
    proc = ["1. First add 2 and 3 to get 5.", "2. Then 5 + 4 = 9.", "3. So the answer is 9."]
    for kind in ("circular", "deception"):
        write_jsonl(root / "prmbench" / f"prm800k_test_p1_4o_{kind}.jsonl", [
            {"idx": "0", "original_question": "What is 2 + 3 + 4?", "classification": kind,
             "original_process": proc,
             "modified_process": [proc[0], "2. Then 5 + 4 = 10.", "3. So the answer is 10."],
             "error_steps": [2]}])
    import pandas as pd

    (root / "prm800k_phase1").mkdir()
    pd.DataFrame({
        "instruction": ["P1", "P1", "P2"],
        "responses": [[], ["Let x be 2."], []],
        "next_response": ["Let x be 2.", "Then x + 1 = 3.", "Only step."],
        "is_solution": [False, True, False],
        "rating": [1.0, 1.0, 0.0],
    }).to_parquet(root / "prm800k_phase1" / "phase1_test.stepwise-critic.parquet")
    return root


def run_cli(out: Path, data: Path, *extra: str) -> int:
    return main(["run", "--out", str(out), "--data", str(data), "--no-progress", *extra])


@pytest.fixture(scope="module")
def first_run(data_root, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("run1")
    assert run_cli(out, data_root, "--tasks", FAST_TASKS, "--systems", RULES,
                   "--judges", "lexical,llm", "--limit", "3") == 0
    return out


def test_run_writes_every_output(first_run):
    names = {p.name for p in first_run.iterdir()}
    assert {"metrics.json", "report.md", "timing.json", "items.jsonl", "plots"} <= names
    plots = {p.name for p in (first_run / "plots").iterdir()}
    # metric bars per task, reward distributions for reward tasks, role confusion
    assert {"gsm8k-socratic_metrics.png", "prmbench-structure_rewards.png",
            "reward-sanity_rewards.png", "annotated-jsonl_roles.png"} <= plots
    assert all((first_run / "plots" / p).stat().st_size > 1000 for p in plots)


def test_report_contents(first_run):
    report = load_report(first_run / "metrics.json")
    assert set(report.tasks) == set(FAST_TASKS.split(","))
    gsm = report.tasks["gsm8k-socratic"]
    assert gsm.n_items == 2 and gsm.available == 2
    assert [r.system for r in gsm.rows] == RULES.split(",") + ["ref:last-sentence"]
    for row in gsm.rows[:-1]:  # both answer references are reported for every system
        assert 0.0 <= row.metrics["answer_agree_short"] <= 1.0
        assert 0.0 <= row.metrics["answer_agree"] <= 1.0
    # the llm judge has no endpoint: skipped with a note, the lexical judge still runs
    assert "llm" in report.skipped_judges
    pb = report.tasks["prmbench-structure"]
    assert {(r.system, r.judge) for r in pb.rows} == {(s, "lexical") for s in RULES.split(",")}
    newline = next(r for r in pb.rows if r.system == "newline")
    assert newline.metrics["rank_acc"] == 1.0 and newline.metrics["rank_acc.deception"] == 1.0
    # one step per line; step 1 is unchanged; steps 2 and 3 are near-copies that state
    # another number (10 for 9): their meta is above the 0.26 lexical threshold, but the
    # judges' number check makes them different steps (0 each): (1 + 0 + 0) / 3
    assert newline.distributions == {"aligned": [1.0, 1.0], "perturbed": [0.333333, 0.333333]}
    ann = report.tasks["annotated-jsonl"]
    assert all(r.confusion is not None for r in ann.rows)
    md = (first_run / "report.md").read_text()
    assert "## reward-sanity" in md and "| newline / lexical |" in md
    assert "![gsm8k-socratic_metrics](plots/gsm8k-socratic_metrics.png)" in md
    assert "judge llm: no endpoint given" in md
    # champ-steps was not asked for; gsrm-ft neither: nothing skipped silently
    assert report.skipped_tasks == {} and report.errors == []


def test_same_seed_same_metrics_and_compare(first_run, data_root, tmp_path):
    assert run_cli(tmp_path, data_root, "--tasks", FAST_TASKS, "--systems", RULES,
                   "--judges", "lexical,llm", "--limit", "3") == 0
    a = (first_run / "metrics.json").read_text()
    b = (tmp_path / "metrics.json").read_text()
    # only the output folder (and the cache path under it) differ
    assert a.replace(str(first_run), "OUT") == b.replace(str(tmp_path), "OUT")
    ra, rb = load_report(first_run / "metrics.json"), load_report(tmp_path / "metrics.json")
    assert compare_reports(ra, rb) == []
    assert format_diffs([]) == "no differences\n"


def test_compare_reports_direction(first_run, tmp_path, capsys):
    ra = load_report(first_run / "metrics.json")
    rb = ra.model_copy(deep=True)
    row = rb.tasks["gsm8k-socratic"].rows[2]  # sentences
    row.metrics["boundary_f1_char"] = row.metrics["boundary_f1_char"] + 0.25
    row.metrics["pk"] = row.metrics["pk"] + 0.25
    del row.metrics["segment_f1"]
    diffs = compare_reports(ra, rb)
    notes = {(d[2], d[3]) for d in diffs}
    # higher F1 is better, higher Pk is worse; a metric missing in B is reported as such
    assert notes == {("boundary_f1_char", "better"), ("pk", "worse"), ("segment_f1", "only in A")}
    path = tmp_path / "b.json"
    path.write_text(rb.model_dump_json())
    assert main(["compare", str(first_run / "metrics.json"), str(path)]) == 0
    out = capsys.readouterr().out
    assert "boundary_f1_char" in out and "+0.250" in out and "worse" in out


class FakeLM(Backend):
    """A model-kind system for tests: sentence decompositions, counted, optionally failing."""

    name = "fake-lm"
    calls = 0
    fail = False
    resets = 0

    def reset(self) -> bool:
        FakeLM.resets += 1
        return True

    def __init__(self) -> None:
        super().__init__(shots=0)

    def generate(self, conversations, max_new_tokens=None):  # pragma: no cover
        raise NotImplementedError

    def decompose_many(self, items: Sequence[tuple[str, str]]) -> list[Generation]:
        if FakeLM.fail:
            raise BackendError("model exploded")
        FakeLM.calls += len(items)
        return SentenceBackend().decompose_many(items)


@pytest.fixture
def fake_lm(monkeypatch):
    FakeLM.calls, FakeLM.fail, FakeLM.resets = 0, False, 0
    monkeypatch.setitem(systems_mod.SYSTEMS, "fake-lm",
                        SystemSpec("fake-lm", "lm", "test stand-in", lambda opts: FakeLM()))
    return FakeLM


def test_second_run_reuses_decompositions(fake_lm, data_root, tmp_path):
    args = ["--tasks", "gsm8k-socratic,reward-sanity", "--systems", "fake-lm",
            "--judges", "lexical", "--limit", "2", "--cache", str(tmp_path / "cache.jsonl")]
    assert run_cli(tmp_path / "a", data_root, *args) == 0
    first_calls = fake_lm.calls
    assert first_calls > 0
    # decoded up front, one group per token budget (640 and 320), then read from the cache
    first = json.loads((tmp_path / "a" / "timing.json").read_text())
    assert sorted(j["task"] for j in first["prefetch"]) == ["gsm8k-socratic", "reward-sanity"]
    assert sum(j["decomposed"] for j in first["prefetch"]) == first_calls
    # why: each group starts on a fresh engine (eval/README.md, "engine fault")
    assert fake_lm.resets == 2
    assert all(j["decomposed"] == 0 for j in first["jobs"])
    assert run_cli(tmp_path / "b", data_root, *args) == 0
    assert fake_lm.calls == first_calls  # nothing decoded the second time
    timing = json.loads((tmp_path / "b" / "timing.json").read_text())
    assert all(j["decomposed"] == 0 and j["cache_hits"] > 0
               for j in timing["jobs"] + timing["prefetch"])
    a = load_report(tmp_path / "a" / "metrics.json")
    b = load_report(tmp_path / "b" / "metrics.json")
    assert compare_reports(a, b) == []
    # the task budget went into the backend identity (gsm8k-socratic's own budget)
    assert a.tasks["gsm8k-socratic"].max_new_tokens == GSM8KSocratic.max_new_tokens == 640


def test_model_failure_is_an_error_not_a_number(fake_lm, data_root, tmp_path, capsys):
    fake_lm.fail = True
    rc = run_cli(tmp_path, data_root, "--tasks", "gsm8k-socratic,reward-sanity",
                 "--systems", "fake-lm,newline", "--judges", "lexical", "--limit", "2")
    assert rc == 1
    report = load_report(tmp_path / "metrics.json")
    assert len(report.errors) == 1 and "model exploded" in report.errors[0]
    for task in report.tasks.values():
        assert [r.system for r in task.rows if r.system == "fake-lm"] == []
        assert "fake-lm" in task.skipped_systems
    # the other system still ran
    assert any(r.system == "newline" for r in report.tasks["reward-sanity"].rows)
    assert "model exploded" in capsys.readouterr().err


def test_unavailable_system_and_missing_data_are_skipped_with_notes(tmp_path, monkeypatch):
    monkeypatch.delenv("GSRM_ADAPTER", raising=False)
    monkeypatch.setattr("gsrm.weights.default_adapter_dir", lambda: None)  # an install without one
    rc = run_cli(tmp_path / "out", tmp_path / "nothing-here", "--tasks",
                 "gsm8k-socratic,annotated-jsonl", "--systems", "gsrm-ft,newline",
                 "--judges", "lexical")
    assert rc == 0
    report = load_report(tmp_path / "out" / "metrics.json")
    assert "data not found" in report.skipped_tasks["gsm8k-socratic"]
    assert "no fine-tuned adapter" in report.tasks["annotated-jsonl"].skipped_systems["gsrm-ft"]
    assert "no fine-tuned adapter" in report.skipped_systems["gsrm-ft"]
    assert "- system gsrm-ft: no fine-tuned adapter" in (tmp_path / "out" / "report.md").read_text()


def test_embedding_judge_runs(data_root, tmp_path):
    assert run_cli(tmp_path, data_root, "--tasks", "reward-sanity", "--systems", "newline",
                   "--judges", "embedding", "--limit", "2", "--no-plots") == 0
    row = load_report(tmp_path / "metrics.json").tasks["reward-sanity"].rows[0]
    assert row.judge == "embedding" and row.metrics["self_max"] == 1.0


@pytest.mark.parametrize(
    "argv",
    [
        ["run", "--out", "x", "--tasks", "nope"],  # unknown task
        ["run", "--out", "x", "--systems", "gpt-5"],  # unknown system
        ["run", "--out", "x", "--judges", "oracle"],  # unknown judge
        ["run", "--out", "x", "--limit", "0"],  # empty limit
        ["compare", "/nonexistent/a.json", "/nonexistent/b.json"],  # unreadable files
    ],
)
def test_bad_input_exits_2(argv, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    assert capsys.readouterr().err.startswith("gsrm-eval: error:")
    assert not (tmp_path / "x").exists()  # nothing was run


def test_list(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert "gsm8k-socratic" in out and "cue-sentences" in out and "windowdiff" in out


@pytest.mark.slow
def test_default_model_end_to_end(tmp_path):
    # the real SmolLM2 on two GSM8K items (real data if present, else the bundled sample)
    task = "gsm8k-socratic" if DATA.is_dir() else "annotated-jsonl"
    rc = main(["run", "--out", str(tmp_path), "--tasks", task, "--systems", "smollm2-fewshot",
               "--limit", "2", "--max-new-tokens", "48", "--no-progress", "--no-plots",
               "--data", str(DATA)])
    assert rc == 0
    report = load_report(tmp_path / "metrics.json")
    row = report.tasks[task].rows[0]
    assert row.system == "smollm2-fewshot" and row.metrics["n"] == 2
    assert 0.0 <= row.metrics["boundary_f1_char"] <= 1.0
    timing = json.loads((tmp_path / "timing.json").read_text())
    assert timing["prefetch"][0]["decomposed"] == 2  # decoded up front
    assert timing["jobs"][0]["cache_hits"] == 2
