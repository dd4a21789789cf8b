"""Task loaders (bad lines reported, held-out splits respected) and the reward-task logic.

Why: the evaluation is only meaningful on the fixed held-out splits, and a corpus with one
malformed line must still be evaluated, with that line named in the report. Small data files
are written here, so these tests need no shared data; the tests on the real data sets skip
when ../shared/data (or $GSRM_DATA) is missing.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from eval.segmentation import evaluate_item
from eval.tasks import TASKS, get_task
from eval.tasks.annotated import SAMPLE, load_annotated
from eval.tasks.base import DataMissing, TaskContext, interleave
from eval.tasks.gsm8k import HELD_OUT_START, last_sentence, load_socratic
from eval.tasks.prmbench import first_drop_step, load_prmbench, locate_step, strip_numbering
from eval.tasks.sanity import load_sanity, prefix_points, solution_lines, variants
from eval.tasks.steps import load_bbm
from gsrm.model import GSRM
from gsrm.structure import ScoreResult, Structure

DATA = Path(os.environ.get("GSRM_DATA") or
            Path(__file__).resolve().parents[1].parent / "shared" / "data")
needs_data = pytest.mark.skipif(not DATA.is_dir(), reason=f"shared data not found at {DATA}")


def write_jsonl(path: Path, rows: list) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def socratic_rows(n_filler: int = HELD_OUT_START) -> list:
    filler = {"question": "Q?", "answer": "How? ** x.\n#### 1"}
    return [filler] * n_filler + [
        {"question": "Ann has 2 apples. Bob gives her 3 more. How many does she have?",
         "answer": "How many from Bob? ** Bob gives 3 apples\nHow many in all? ** "
                   "She has 2 + 3 = <<2+3=5>>5 apples.\n#### 5"},
        "{not json",
        {"question": "Missing answer"},
        {"question": "No steps", "answer": "#### 3"},
    ]


# --------------------------------------------------------------------------- gsm8k
def test_socratic_loader_holds_out_and_reports_bad_lines(tmp_path):
    path = write_jsonl(tmp_path / "s.jsonl", socratic_rows())
    loaded = load_socratic(path)
    # only items >= 1000 are read: the filler before them never becomes an item
    assert [it.id for it in loaded.items] == ["gsm8k-test-1000"]
    it = loaded.items[0]
    # line breaks removed; calculator notes stripped; spans index the joined trace
    assert it.reasoning == "Bob gives 3 apples She has 2 + 3 = 5 apples."
    assert [it.reasoning[s.start:s.end] for s in it.spans] == [
        "Bob gives 3 apples", "She has 2 + 3 = 5 apples."]
    assert it.questions == ["How many from Bob?", "How many in all?"]
    assert [p.split(": ", 1)[0].rsplit(":", 1)[1] for p in loaded.problems] == [
        "1002", "1003", "1004"]  # bad JSON, missing field, no steps: by line number
    assert "field 'answer': is missing" in loaded.problems[1]


def test_last_sentence():
    assert last_sentence("Ann has 2. Bob has 3. How many in all?") == "How many in all?"


def test_gsm8k_metrics_and_reference_row(tmp_path):
    write_jsonl(tmp_path / "gsm8k" / "test_socratic.jsonl", socratic_rows())
    ctx = TaskContext(data_root=tmp_path)
    task = get_task("gsm8k-socratic")
    items = task.load(ctx).items
    structs = GSRM.from_names(backend="sentences", judge="lexical").decompose_many(
        task.requests(items, ctx))
    row = task.evaluate(items, structs, "sentences", {}, ctx).rows[0]
    # "Bob gives 3 apples She has ..." is one sentence: one step, no boundary found
    assert row.metrics["boundary_f1_char"] == 0.0 and row.metrics["steps_hyp"] == 1
    # both human steps are covered by that step; its answer (5) equals only step 2's result
    assert row.metrics["answer_acc"] == pytest.approx(0.5)
    ref = task.reference_rows(items, ctx)[0]
    assert ref.system == "ref:last-sentence" and ref.metrics["n"] == 1


# --------------------------------------------------------------------------- other loaders
def test_bbm_loader_interleaves_files(tmp_path):
    write_jsonl(tmp_path / "b_task.jsonl", [{"input": "i1", "steps": ["s1.", "s2."]},
                                            {"input": "i2", "steps": ["t1."]}])
    write_jsonl(tmp_path / "a_task.jsonl", [{"input": "j1", "steps": ["u1.\nmore", "u2."]},
                                            {"input": "bad", "steps": "not a list"},
                                            {"input": "empty", "steps": ["  "]}])
    loaded = load_bbm(tmp_path)
    # files in name order, round-robin: a1, b1, b2
    assert [it.id for it in loaded.items] == ["bbm-a_task-1", "bbm-b_task-1", "bbm-b_task-2"]
    assert loaded.items[0].reasoning == "u1. more u2."  # line breaks inside steps removed too
    assert len(loaded.problems) == 2
    assert "field 'steps'" in loaded.problems[0] and "no steps" in loaded.problems[1]


def test_bbm_missing_folder_is_data_missing(tmp_path):
    with pytest.raises(DataMissing):
        get_task("bbm-steps").load(TaskContext(data_root=tmp_path))


def prmbench_row(kind: str, idx: str = "0") -> dict:
    return {"idx": idx, "original_question": "What is 2 + 3 + 4?", "classification": kind,
            "original_process": ["1. First add 2 and 3 to get 5.", "2. Then 5 + 4 = 9.",
                                 "3. So the answer is 9."],
            "modified_process": ["1. First add 2 and 3 to get 5.", "2. Then 5 + 4 = 10.",
                                 "3. So the answer is 10."],
            "error_steps": [2]}


def test_prmbench_loader(tmp_path):
    write_jsonl(tmp_path / "prm800k_test_p1_4o_circular.jsonl",
                [prmbench_row("circular", "0"), prmbench_row("circular", "1")])
    write_jsonl(tmp_path / "prm800k_test_p1_4o_deception.jsonl",
                [prmbench_row("deception"), {"idx": "x", "classification": "deception"}])
    write_jsonl(tmp_path / "prm800k_train_p1_first400_4o_circular.jsonl",
                [prmbench_row("circular", "train")])  # never read: training split
    loaded = load_prmbench(tmp_path)
    assert [it.kind for it in loaded.items] == ["circular", "deception", "circular"]
    assert all("train" not in it.id for it in loaded.items)
    assert loaded.items[0].original[0] == "First add 2 and 3 to get 5."  # numbering removed
    assert len(loaded.problems) == 1 and "original_question" in loaded.problems[0]


@pytest.mark.parametrize("split", ["dev", "test", "train"])
def test_prmbench_reads_each_split_from_its_own_problems(tmp_path, split):
    """test: the prm800k_test_* files; dev (what choices are made on) and train: the
    prm800k_train_* rows whose problem falls in that split, never a test file's row."""
    from eval.splits import split_of

    questions = [f"What is {k} + {k + 1}?" for k in range(60)]
    train_rows = [{**prmbench_row("circular", str(k)), "original_question": q}
                  for k, q in enumerate(questions)]
    write_jsonl(tmp_path / "prm800k_train_p1_first400_4o_circular.jsonl", train_rows)
    write_jsonl(tmp_path / "prm800k_test_p1_4o_circular.jsonl", [prmbench_row("circular", "t")])
    loaded = load_prmbench(tmp_path, split=split)
    if split == "test":
        assert [it.id for it in loaded.items] == ["prm800k_test_p1_4o_circular:t"]
    else:
        want = [q for q in questions if split_of(q, "prmbench") == split]
        assert want and [it.problem for it in loaded.items] == want
        assert all(it.id.startswith("prm800k_train_") for it in loaded.items)


@pytest.mark.parametrize(
    "step, expected",
    [
        ("3. Then 2 + 2 = 4.", "Then 2 + 2 = 4."),
        ("12) Done.", "Done."),
        ("3.5 is the value.", "3.5 is the value."),  # a decimal, not numbering
        ("No number.", "No number."),
    ],
)
def test_strip_numbering(step, expected):
    assert strip_numbering(step) == expected


def test_annotated_loader_validates(tmp_path):
    good = {"id": "a", "problem": "p", "reasoning": "First x. Then y.",
            "steps": [{"start": 0, "end": 8, "role": "meta"},
                      {"start": 9, "end": 16, "role": "solve"}], "label": "math"}
    rows = [
        good,
        {**good, "id": "b", "steps": [{"start": 0, "end": 99, "role": "meta"}]},  # past end
        {**good, "id": "c", "steps": [{"start": 5, "end": 8, "role": "meta"},
                                      {"start": 0, "end": 4, "role": "solve"}]},  # unordered
        {**good, "id": "d", "steps": [{"start": 0, "end": 8, "role": "plan"}]},  # bad role
        {**good, "id": "e", "steps": []},  # no steps
        {**good, "id": "a"},  # duplicate id
        {**good, "id": "f", "steps": [{"start": 0, "end": 8}]},  # role missing
    ]
    loaded = load_annotated(write_jsonl(tmp_path / "a.jsonl", rows))
    assert [it.id for it in loaded.items] == ["a"]
    assert loaded.items[0].group == "math"
    msgs = loaded.problems
    assert len(msgs) == 6
    assert "past the reasoning's 16 characters" in msgs[0]
    assert "before the previous step ends" in msgs[1]
    assert "not one of" in msgs[2]
    assert "duplicate id 'a'" in msgs[4]
    assert all(m.startswith(f"{tmp_path / 'a.jsonl'}:") for m in msgs)


def test_bundled_annotated_sample_is_valid():
    loaded = load_annotated(SAMPLE)
    assert loaded.problems == [] and len(loaded.items) == 8
    roles = {s.role for it in loaded.items for s in it.role_spans or []}
    assert roles == {"meta", "solve", "other"}
    # a step's meta-reasoning and its solving are one step: fewer steps than role spans
    for it in loaded.items:
        assert it.role_spans is not None and len(it.spans) < len(it.role_spans)
        assert it.spans[0].start == it.role_spans[0].start


def test_annotated_boundaries_are_steps_not_role_changes():
    """A hypothesis with the reference's steps scores 1.0 even though each step holds two
    roles: a change of role inside a step is not a boundary (it was before 2026-11-30)."""
    from gsrm.structure import Step, Structure

    it = load_annotated(SAMPLE).items[0]
    steps = [Step(meta="m", subproblem="s", answer="a", span=(sp.start, sp.end))
             for sp in it.spans]
    r = evaluate_item(it.reasoning, it.spans, Structure(steps=steps), role_spans=it.role_spans)
    assert r.char.f1 == 1.0 and r.n_hyp_steps == len(it.spans)


def test_interleave():
    assert interleave([[1, 2, 3], ["a"], []]) == [1, "a", 2, 3]


# --------------------------------------------------------------------------- reward sanity
def test_solution_lines():
    assert solution_lines("A 1+1=<<1+1=2>>2.\n\nB.\n#### 2") == ["A 1+1=2.", "B."]


@pytest.mark.parametrize(
    "n, max_points, points",
    [
        (2, 3, [0, 1, 2]),  # few enough: every prefix length
        (4, 3, [0, 2, 4]),  # none, half, all
        (5, 3, [0, 3, 5]),  # half rounds up
        (8, 5, [0, 2, 4, 6, 8]),
        (6, 5, [0, 2, 3, 5, 6]),  # 1.5 -> 2, 4.5 -> 5
    ],
)
def test_prefix_points(n, max_points, points):
    assert prefix_points(n, max_points) == points


def sanity_rows() -> list:
    filler = {"question": "q", "answer": "x\n#### 1"}
    teach = {"question": "T?", "answer": "a1.\na2.\na3.\na4.\n#### 4"}
    other = {"question": "O?", "answer": "b1.\nb2.\n#### 2"}
    third = {"question": "R?", "answer": "c1.\nc2.\nc3.\n#### 3"}
    return [filler] * HELD_OUT_START + [teach, other, third]


def test_sanity_variants(tmp_path):
    loaded = load_sanity(write_jsonl(tmp_path / "t.jsonl", sanity_rows()))
    # items with >= 3 steps; foreign lines from the following items, wrapping around
    assert [it.id for it in loaded.items] == ["gsm8k-test-1000", "gsm8k-test-1002"]
    teacher = loaded.items[0]
    assert teacher.foreign == ["b1.", "b2.", "c1.", "c2."]
    v = variants(teacher, seed=0)
    assert v["self"] == ["a1.", "a2.", "a3.", "a4."]
    assert sorted(v["shuffled"]) == v["self"] and v["shuffled"] != v["self"]
    assert v["truncated"] == ["a1.", "a2."]
    replaced = [i for i, (a, b) in enumerate(zip(v["self"], v["replaced"])) if a != b]
    assert len(replaced) == 1 and v["replaced"][replaced[0]] == teacher.foreign[replaced[0]]
    assert v["prefix 0"] == teacher.foreign and v["prefix 2"] == ["a1.", "a2.", "c1.", "c2."]
    assert set(v) == {"self", "shuffled", "truncated", "replaced", "prefix 0", "prefix 2"}
    # deterministic for a seed; another seed may choose differently
    assert variants(teacher, seed=0) == v


def test_sanity_dev_reads_the_train_files_dev_problems(tmp_path):
    """``--split dev`` builds its teachers from gsm8k/train.jsonl's dev problems (what
    choices are made on), never from the held-out test items."""
    from eval.splits import split_of

    rows = [{"question": f"How many apples does shop {k} sell?",
             "answer": f"a{k}.\nb{k}.\nc{k}.\n#### {k}"} for k in range(80)]
    write_jsonl(tmp_path / "gsm8k" / "train.jsonl", rows)
    write_jsonl(tmp_path / "gsm8k" / "test.jsonl", sanity_rows())
    dev = get_task("reward-sanity").load(TaskContext(data_root=tmp_path, split="dev"))
    want = [r["question"] for r in rows if split_of(r["question"], "gsm8k") == "dev"]
    assert want and [it.problem for it in dev.items] == want
    assert all(it.id.startswith("gsm8k-train-") for it in dev.items)
    test = get_task("reward-sanity").load(TaskContext(data_root=tmp_path))
    assert [it.id for it in test.items] == ["gsm8k-test-1000", "gsm8k-test-1002"]


def test_sanity_invariants_hold_for_an_exact_decomposer(tmp_path):
    write_jsonl(tmp_path / "gsm8k" / "test.jsonl", sanity_rows())
    ctx = TaskContext(data_root=tmp_path)
    task = get_task("reward-sanity")
    items = task.load(ctx).items
    g = GSRM.from_names(backend="sentences", judge="lexical")
    structs = g.decompose_many(task.requests(items, ctx))
    row = task.evaluate(items, structs, "sentences", {"lexical": g.judge}, ctx).rows[0]
    # one step per line: the reward rule itself must pass every invariant
    for m in ("self_max", "lower_shuffled", "lower_truncated", "lower_replaced", "rank_acc",
              "auc", "prefix_monotone", "prefix_spearman"):
        assert row.metrics[m] == 1.0, m
    assert len(row.distributions["aligned"]) == 2
    assert len(row.distributions["perturbed"]) == 6


# --------------------------------------------------------------------------- prmbench logic
def result(step_rewards, n_teacher, n_student) -> ScoreResult:
    from gsrm.structure import Step

    def mk(n: int) -> Structure:
        return Structure(steps=[Step(meta="m", subproblem="s", answer="a")] * n)

    return ScoreResult(reward=sum(step_rewards), normalized_reward=0.0, coverage=0.0,
                       step_rewards=step_rewards, teacher=mk(n_teacher), student=mk(n_student))


@pytest.mark.parametrize(
    "rewards, n_t, n_s, expected",
    [
        ([1.0, 0.5, 0.0], 3, 3, 1),  # the sub-problem or answer differed at step 1
        ([1.0, 1.0, 0.0], 3, 3, 2),  # the gate closed at step 2
        ([1.0, 1.0], 3, 2, None),  # the student ran out: nothing to locate
        ([1.0, 1.0], 2, 3, 2),  # the student's extra step is where it departs
        ([], 0, 2, None),
    ],
)
def test_first_drop_step(rewards, n_t, n_s, expected):
    assert first_drop_step(result(rewards, n_t, n_s)) == expected


def test_prmbench_first_drop_is_located_in_the_perturbed_step(tmp_path):
    write_jsonl(tmp_path / "prmbench" / "prm800k_test_p1_4o_circular.jsonl",
                [prmbench_row("circular")])
    ctx = TaskContext(data_root=tmp_path)
    task = get_task("prmbench-structure")
    items = task.load(ctx).items
    g = GSRM.from_names(backend="sentences", judge="lexical")
    structs = g.decompose_many(task.requests(items, ctx))
    text, spans = items[0].modified_text_and_spans()
    assert locate_step(structs[1], text, spans, 1) == 2
    row = task.evaluate(items, structs, "sentences", {"lexical": g.judge}, ctx).rows[0]
    # step 2 ("Then 5 + 4 = 10.") states 10 where the teacher has 9: the answer verdict fails
    # there first, which is the error step
    assert row.metrics["first_drop_in_error"] == 1.0 and row.metrics["first_drop_exact"] == 1.0
    assert row.metrics["rank_acc"] == 1.0 and row.metrics["rank_acc.circular"] == 1.0


# --------------------------------------------------------------------------- real data
@needs_data
@pytest.mark.parametrize(
    "task, n_available, first_id",
    [
        ("gsm8k-socratic", 319, "gsm8k-test-1000"),  # the last 319 of 1,319
        ("prm800k-steps", 101, "prm800k-test-0"),  # 101 test problems
        ("reward-sanity", None, "gsm8k-test-1000"),
        ("prmbench-structure", None, None),
        ("bbm-steps", None, None),
    ],
)
def test_real_data_loads_cleanly(task, n_available, first_id):
    loaded = get_task(task).load(TaskContext(data_root=DATA, limit=3))
    assert loaded.problems == [] and len(loaded.items) == 3
    if n_available is not None:
        assert loaded.available == n_available
    if first_id is not None:
        assert loaded.items[0].id == first_id


@needs_data
def test_real_prmbench_reads_only_test_files():
    loaded = get_task("prmbench-structure").load(TaskContext(data_root=DATA))
    assert loaded.items and all(it.id.startswith("prm800k_test_") for it in loaded.items)
    assert len({it.kind for it in loaded.items[:8]}) == 8  # interleaved: all types first


@needs_data
@pytest.mark.parametrize("task", ["prmbench-structure", "reward-sanity"])
def test_real_reward_tasks_dev_shares_no_problem_with_test(task):
    dev = get_task(task).load(TaskContext(data_root=DATA, split="dev", limit=50))
    test = get_task(task).load(TaskContext(data_root=DATA))
    assert len(dev.items) == 50 and dev.available >= 100
    assert not {it.problem for it in dev.items} & {it.problem for it in test.items}


def test_champ_loads_from_pypi_package():
    pytest.importorskip("champ_dataset")
    loaded = get_task("champ-steps").load(TaskContext(limit=2))
    # the test split (eval.splits: 40% of the 270 problems), never the training problems
    assert len(loaded.items) == 2 and 80 <= loaded.available <= 135
    assert all(len(it.spans) >= 1 for it in loaded.items)
    dev = get_task("champ-steps").load(TaskContext(split="dev"))
    assert not {it.id for it in dev.items} & {it.id for it in
                                              get_task("champ-steps").load(TaskContext()).items}


def test_every_task_is_registered():
    assert set(TASKS) == {"gsm8k-socratic", "prm800k-steps", "champ-steps", "bbm-steps",
                          "branching-steps", "schoenfeld-r1", "annotated-jsonl",
                          "prmbench-structure", "reward-sanity"}
    with pytest.raises(ValueError, match="unknown task"):
        get_task("mmlu")


# --------------------------------------------------------------------------- branching, schoenfeld
def test_branching_trace_opens_the_retry_at_the_reflection():
    import random

    from eval.tasks.branching import BranchTree, branch_steps

    tree = BranchTree("p", ["A is 1.", "B is 2.", "C is 3."], {1: ["B is 5.", "B is 7."]})
    steps = branch_steps(tree, random.Random(3), ["Wait, no."], max_branches=1,
                         max_attempts=2, p_none=0)
    # why: the chain keeps its order, wrong attempts come before the chosen step, and every
    # retry after the first attempt is opened by a reflection (its own step boundary)
    assert steps[0] == "A is 1." and steps[-2:] == ["Wait, no. B is 2.", "C is 3."]
    wrong = steps[1:-2]
    assert wrong[0] in ("B is 5.", "B is 7.")
    assert all(w.startswith("Wait, no. B is") for w in wrong[1:])


def test_branching_reflections_of_the_test_split_are_held_out():
    from eval.tasks.branching import REFLECTIONS_TEST, REFLECTIONS_TRAIN

    # why: a figure on branching-steps must not be the memory of a training phrase
    assert not set(REFLECTIONS_TEST) & set(REFLECTIONS_TRAIN)


@needs_data
def test_branching_task_loads_traces_with_several_steps():
    loaded = get_task("branching-steps").load(TaskContext(data_root=DATA, limit=3))
    assert loaded.items and all(len(it.spans) >= 2 for it in loaded.items)


def _schoenfeld_checkout(root):
    import json as _json

    (root / "responses_original").mkdir(parents=True)
    (root / "responses_labeled").mkdir()
    text = ("Okay, I need x. Hmm, right. Let me plan: solve it.\n\nSo x = 2.\n\nWait, check: "
            "2 works.</think>Final: 2")
    (root / "responses_original" / "SAT_deepseekR1_results.json").write_text(_json.dumps(
        [{"Question ID": "q1", "Instruction": "Find x.", "deepseek-reasoner (response)": text}]))
    labels = [("Okay, I need x.", "Read"), ("Hmm, right.", "Monitor"),
              ("Let me plan: solve it.", "Plan"), ("So x = 2.", "Implement"),
              ("Wait, check: 2 works.</think>Final: 2", "Verify")]
    (root / "responses_labeled" / "1.json").write_text(_json.dumps(
        {"Question ID": "q1", "data": [{"text": t, "gt-class-2": c} for t, c in labels]}))
    return text


def test_schoenfeld_steps_come_from_episode_changes(tmp_path):
    from eval.tasks.schoenfeld import load_schoenfeld

    text = _schoenfeld_checkout(tmp_path)
    loaded = load_schoenfeld(tmp_path)
    assert loaded.problems == [] and len(loaded.items) == 1
    it = loaded.items[0]
    # why: the trace ends at </think>; "Hmm, right." (Monitor) opens the Plan step
    assert it.reasoning == text.split("</think>")[0]
    starts = [it.reasoning[s.start:s.end][:12] for s in it.spans]
    assert starts == ["Okay, I need", "Hmm, right. ", "So x = 2.", "Wait, check:"]


def test_schoenfeld_is_skipped_without_a_checkout(monkeypatch):
    monkeypatch.delenv("GSRM_SCHOENFELD", raising=False)
    with pytest.raises(DataMissing, match="Schoenfeld"):
        get_task("schoenfeld-r1").load(TaskContext())
