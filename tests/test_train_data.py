"""training.data / training.sft / gsrm-train: SFT example building, splits, encoding, CLI."""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

import pytest

from gsrm.io import InputError
from gsrm.parse import parse_structure
from training import cli
from training.data import (
    LAYOUT_WEIGHTS,
    SFTExample,
    assign_split,
    build,
    derive_meta,
    derive_subproblem,
    load_examples,
    render_trace,
    weak_step,
    write_dataset,
)
from training.sft import PRESETS, select

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.mark.parametrize(("step", "expected"), [
    # unit words after the result become the "how many" question
    ("Janet sells 16 - 3 - 4 = 9 duck eggs a day.", "How many duck eggs a day?"),
    # a dollar result asks for money, keeping the words after it
    ("She makes 9 * 2 = $18 every day.", "How much money, in dollars, every day?"),
    # a bare result: the question is the expression itself
    ("So the total is 2+1=3", "What is 2+1?"),
    # no '=' at all: the step's first sentence is what it establishes
    ("He buys twice as many. That is a lot.", "What follows from: He buys twice as many?"),
    # "and ..." after the number is a clause, not a unit: fall back to the expression
    ("He pays 3*4=12 and leaves.", "What is 3*4?"),
])
def test_derive_subproblem(step: str, expected: str) -> None:
    assert derive_subproblem(step) == expected


@pytest.mark.parametrize(("i", "n", "start"), [
    (0, 3, "First, work out how many"),  # the first step starts from the givens
    (1, 3, "Next, with that known"),  # a middle step builds on earlier ones
    (2, 3, "Finally, use the previous"),  # the last step combines the results
    (0, 1, "First, work out"),  # a one-step solution is "first", not "finally"
])
def test_derive_meta_position(i: int, n: int, start: str) -> None:
    meta = derive_meta(i, n, "How many eggs are left?")
    assert meta.startswith(start)
    assert "how many eggs are left" in meta  # names the sub-problem it is devoted to


def test_weak_step_first_and_last_sentence() -> None:
    sub, ans = weak_step("We square both sides. That gives 9 = 3*3 = 9x.")
    assert sub == "We square both sides."
    assert "That gives" in ans


def test_render_trace_layouts_cover_all_and_keep_text() -> None:
    steps = ["The first step is 1.", "The second step is 2.", "So the third is 3."]
    seen = set()
    for seed in range(200):
        text, layout = render_trace(steps, random.Random(seed))
        seen.add(layout)
        for s in steps:  # every step's words survive (connectives may lower-case "The")
            assert s[1:] in text
        if layout in ("space", "connective"):
            assert "\n" not in text  # no line break gives a boundary away
    assert seen == set(LAYOUT_WEIGHTS)


def test_assign_split_is_stable_and_by_problem() -> None:
    problems = [f"problem number {i}" for i in range(2000)]
    splits = [assign_split(p) for p in problems]
    assert splits == [assign_split(p) for p in problems]
    assert assign_split("Problem  NUMBER 7") == assign_split("problem number 7")  # normalised
    frac = splits.count("train") / len(splits)
    assert 0.85 < frac < 0.95


def _socratic_root(tmp_path: Path, n: int = 1003) -> Path:
    root = tmp_path / "data"
    (root / "gsm8k").mkdir(parents=True)
    line = {"question": "Tom has 2 apples and buys 3 more. How many apples now?",
            "answer": "How many apples did he buy? ** He buys 3 apples.\n"
                      "How many apples now? ** He has 2+3=<<2+3=5>>5 apples now.\n#### 5"}
    rows = [dict(line, question=f"{line['question']} (v{i})") for i in range(n)]
    (root / "gsm8k" / "test_socratic.jsonl").write_text(
        "".join(json.dumps(r) + "\n" for r in rows))
    return root


def test_build_socratic_targets_parse_and_fixed_split(tmp_path: Path) -> None:
    root = _socratic_root(tmp_path)
    examples, report = build(root, ["gsm8k-socratic"], seed=0)
    assert len(examples) == 1003 and not report.problems
    # items with index >= 1000 are the shared evaluation split, always test
    assert all(e.split == "test" for e in examples if int(e.id.rsplit("-", 1)[1]) >= 1000)
    ex = examples[0]
    s = parse_structure(ex.target)
    assert [st.subproblem for st in s.steps] == ["How many apples did he buy?",
                                                 "How many apples now?"]
    assert s.steps[1].answer == "He has 5 apples now."  # arithmetic removed, result kept
    assert s.final_answer == "5"
    assert "<<" not in ex.reasoning  # calculator notes removed
    assert not any(w for w in s.warnings if "missing" in w)


def test_build_reports_bad_lines_with_line_numbers(tmp_path: Path) -> None:
    root = _socratic_root(tmp_path, n=2)
    path = root / "gsm8k" / "test_socratic.jsonl"
    path.write_text(path.read_text() + "{not json\n" + json.dumps({"question": "q"}) + "\n")
    examples, report = build(root, ["gsm8k-socratic"], seed=0)
    assert len(examples) == 2
    assert any(":3:" in p and "invalid JSON" in p for p in report.problems)
    assert any(":4:" in p and "'answer'" in p for p in report.problems)


def test_unknown_source_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(KeyError, match="unknown source"):
        build(tmp_path, ["nope"])
    with pytest.raises(InputError, match="not found"):
        build(tmp_path, ["gsm8k-socratic"])


def test_write_and_load_roundtrip_and_bad_line(tmp_path: Path) -> None:
    examples, report = build(_socratic_root(tmp_path, n=40), ["gsm8k-socratic"], seed=0)
    manifest = write_dataset(examples, tmp_path / "out", report, {"seed": 0})
    total = sum(f["examples"] for f in manifest["files"].values())
    assert total == 40
    back = load_examples(tmp_path / "out" / "train.jsonl")
    assert back == [e for e in examples if e.split == "train"]
    bad = tmp_path / "bad.jsonl"
    bad.write_text(back[0].model_dump_json() + "\n" + '{"id": "x"}\n')
    with pytest.raises(InputError, match=r"bad\.jsonl:2"):
        load_examples(bad)


def test_select_is_deterministic_and_honours_mix() -> None:
    rows = [SFTExample(id=f"{s}-{i}", source=s, split="train", problem="p", reasoning="r",
                       target="t", n_steps=1) for s in ("a", "b") for i in range(10)]
    got = select(rows, {"a": None, "b": 3}, seed=1)
    assert got == select(rows, {"a": None, "b": 3}, seed=1)
    assert sum(e.source == "a" for e in got) == 10 and sum(e.source == "b" for e in got) == 3
    assert PRESETS["cpu-small"].max_minutes is not None  # the CPU preset has a time budget


@pytest.mark.parametrize(("base", "text", "want"), [
    ({"a": 3, "b": 4}, None, {"a": 3, "b": 4}),
    ({"a": 3, "b": 4}, "", {"a": 3, "b": 4}),
    ({"a": 3, "b": 4}, "b=10", {"a": 3, "b": 10}),
    ({"a": 3, "b": 4}, " a = 0 , b=1,", {"a": 0, "b": 1}),
    ({"a": None, "b": 4}, "b=all", {"a": None, "b": None}),
    ({"a": None, "b": 4}, "a=7", {"a": 7, "b": 4}),
])
def test_override_mix_changes_only_the_named_sources(base: dict, text: str | None,
                                                    want: dict) -> None:
    from training.data import override_mix

    before = dict(base)
    assert override_mix(base, text) == want
    assert base == before  # the preset's own mix is left as it is


@pytest.mark.parametrize(("base", "text", "message"), [
    ({"a": 3}, "c=1", "'c=1' is not source=N with a source of: a"),
    ({"a": 3}, "a", "'a' is not source=N"),
    ({"a": 3}, "a=-1", "the count of 'a' must be a whole number >= 0, got '-1'"),
    ({"a": 3}, "a=all", "the count of 'a' must be a whole number >= 0, got 'all'"),
    ({"a": None}, "a=x", "must be a whole number >= 0 or all, got 'x'"),
])
def test_override_mix_refuses_bad_entries_naming_them(base: dict, text: str,
                                                      message: str) -> None:
    from training.data import override_mix

    with pytest.raises(ValueError, match=re.escape(message)):
        override_mix(base, text)


@pytest.mark.parametrize("argv", [
    ["sft", "--data-dir", "{absent}", "--out", "{out}", "--preset", "describer-cpu",
     "--mix", "nope=3"],
    ["describer-data", "--data", "{absent}", "--out", "{out}", "--mix", "nope=3"],
])
def test_a_bad_mix_is_refused_before_any_data_is_read(tmp_path: Path, argv: list[str],
                                                       capsys: pytest.CaptureFixture[str]
                                                       ) -> None:
    args = [a.format(absent=tmp_path / "absent", out=tmp_path / "out") for a in argv]
    assert cli.main(args) == 2
    assert "--mix: 'nope=3' is not source=N with a source of: gsm8k-socratic" in \
        capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_cli_build_data_and_bad_sft_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = _socratic_root(tmp_path, n=30)
    out = tmp_path / "sft"
    assert cli.main(["build-data", "--data", str(root), "--out", str(out),
                     "--sources", "gsm8k-socratic"]) == 0
    assert json.loads(capsys.readouterr().out)["counts"]
    (out / "train.jsonl").write_text("oops\n")
    assert cli.main(["sft", "--data-dir", str(out), "--out", str(tmp_path / "run")]) == 2
    assert "train.jsonl:1" in capsys.readouterr().err


@pytest.mark.skipif(not (DATA / "gsm8k" / "train.jsonl").exists(), reason=f"no data at {DATA}")
def test_real_gsm8k_sources_build_clean() -> None:
    examples, report = build(DATA, ["gsm8k-socratic", "gsm8k-train"], seed=0)
    assert not report.problems
    held = [e for e in examples if e.source == "gsm8k-socratic"
            and int(e.id.rsplit("-", 1)[1]) >= 1000]
    assert len(held) == 319 and all(e.split == "test" for e in held)
    for e in examples[:300]:
        s = parse_structure(e.target)
        assert s.steps and all(st.is_complete for st in s.steps), e.id


@pytest.mark.slow
def test_encode_masks_prompt_and_tiny_sft_run(tmp_path: Path) -> None:
    """The real path: the embedded model, two LoRA steps, an adapter that loads for decoding."""
    from transformers import AutoTokenizer

    from gsrm.backends import TransformersBackend
    from gsrm.weights import default_model_dir
    from training.sft import IGNORE, encode

    tok = AutoTokenizer.from_pretrained(default_model_dir())
    examples, report = build(_socratic_root(tmp_path, n=24), ["gsm8k-socratic"], seed=0)
    enc = encode(tok, examples[0], 2048)
    assert enc is not None
    target = [i for i, lab in zip(enc["input_ids"], enc["labels"]) if lab != IGNORE]
    assert tok.decode(target).startswith("[Meta-reasoning 1]")
    assert enc["labels"][0] == IGNORE
    data = tmp_path / "sft"
    write_dataset(examples, data, report, {})
    run = tmp_path / "run"
    assert cli.main(["sft", "--data-dir", str(data), "--out", str(run), "--max-steps", "2",
                     "--max-steps-examples", "8", "--threads", "2",
                     "--mix", "gsm8k-socratic=5"]) == 0
    info = json.loads((run / "run.json").read_text())
    assert info["steps"] == 2 and info["train_tokens"] > 0
    # why: --mix overrides the preset's mix, and the run records the mix it drew
    assert info["mix"]["gsm8k-socratic"] == 5 and info["train_examples"] <= 5
    # why: bf16 only where the CPU has it (emulated, it was 24x slower than float32)
    from training.precision import use_bf16

    assert info["bf16"] is use_bf16(True, cuda=False)
    assert (run / "adapter" / "adapter_model.safetensors").exists()
    # why: the adapter folder says which describer format it was trained on (whole traces: none)
    assert json.loads((run / "adapter" / "run.json").read_text())["span_format"] is None
    backend = TransformersBackend(adapter=str(run / "adapter"), shots=0, max_new_tokens=8)
    assert backend.generate([[{"role": "user", "content": "hi"}]], 8)[0].text is not None


@pytest.mark.slow
@pytest.mark.parametrize(("source", "wording_trained"), [
    ("gsm8k-socratic", True), ("labels", True), ("gsm8k-train", False), ("prm800k", False),
])
def test_encode_trains_wording_only_from_human_or_teacher_sources(source: str,
                                                                  wording_trained: bool) -> None:
    """Derived and weak rows train headers and answers; their meta/sub-problem text is masked."""
    from transformers import AutoTokenizer

    from gsrm.weights import default_model_dir
    from training.data import SFTExample
    from training.sft import IGNORE, encode

    tok = AutoTokenizer.from_pretrained(default_model_dir())
    target = ("[Meta-reasoning 1]: First, work out the eggs.\n[Sub-problem 1]: How many eggs?\n"
              "[Answer 1]: She sells 9 eggs.\nSo the final answer is: 9")
    ex = SFTExample(id="x", source=source, split="train", problem="Eggs?",
                    reasoning="She sells 16 - 7 = 9 eggs.", target=target, n_steps=1)
    enc = encode(tok, ex, 2048)
    assert enc is not None
    trained = tok.decode([i for i, lab in zip(enc["input_ids"], enc["labels"]) if lab != IGNORE])
    assert "[Answer 1]: She sells 9 eggs.\nSo the final answer is: 9" in trained
    assert ("work out the eggs" in trained) is wording_trained
    assert ("How many eggs?" in trained) is wording_trained
    if not wording_trained:
        assert trained.startswith("[Meta-reasoning 1]:\n[Sub-problem 1]:\n[Answer 1]:")


def _encoded(span_format: str, source: str, train_wording: bool | None) -> tuple[str, str]:
    """(prompt, trained text) of a one-step describer row in ``span_format`` as
    ``training.sft.encode`` writes it with the embedded tokenizer."""
    from transformers import AutoTokenizer

    from gsrm.spanformat import get_span_format
    from gsrm.weights import default_model_dir
    from training.data import SFTExample
    from training.sft import IGNORE, encode

    tok = AutoTokenizer.from_pretrained(default_model_dir())
    target = get_span_format(span_format).render("Work out the eggs.", "How many eggs?",
                                                 "9 eggs")
    ex = SFTExample(id="x", source=source, split="train", problem="Eggs?",
                    reasoning="She sells 16 - 7 = 9 eggs.", target=target, layout="span",
                    n_steps=1, train_wording=train_wording)
    enc = encode(tok, ex, 2048, span_format)
    assert enc is not None
    ids, labels = enc["input_ids"], enc["labels"]
    n_prompt = next(k for k, lab in enumerate(labels) if lab != IGNORE)
    return (tok.decode(ids[:n_prompt]),
            tok.decode([i for i, lab in zip(ids, labels, strict=True) if lab != IGNORE]))


@pytest.mark.slow
@pytest.mark.parametrize(("source", "train_wording", "wording_trained"), [
    ("gsm8k-socratic", None, True), ("prm800k", None, False),
    # a row a describer reworded (training.relabel) trains its wording whatever its source
    ("prm800k", True, True), ("gsm8k-socratic", False, False),
])
def test_describer_rows_encode_in_their_span_format(source: str, train_wording: bool | None,
                                                    wording_trained: bool) -> None:
    """Describer data in the compact format: its own short prompt, its own headers masked
    around the weak wording, the answer and the end of turn always trained."""
    from gsrm.spanformat import PQA_SYSTEM_PROMPT

    prompt, trained = _encoded("pqa", source, train_wording)
    assert PQA_SYSTEM_PROMPT in prompt and "Step:\nShe sells 16 - 7 = 9 eggs." in prompt
    assert "Reasoning to decompose" not in prompt
    assert "Answer: 9 eggs<|im_end|>" in trained
    assert ("Work out the eggs." in trained) is wording_trained
    assert ("How many eggs?" in trained) is wording_trained
    if not wording_trained:
        assert trained.startswith("Plan:\nQuestion:\nAnswer: 9 eggs")


@pytest.mark.slow
@pytest.mark.parametrize(("train_wording", "wording_trained"), [(None, False), (True, True)])
def test_qa_rows_train_the_question_and_answer_only(train_wording: bool | None,
                                                    wording_trained: bool) -> None:
    """The ``qa`` format: its own prompt, no plan anywhere, the question masked like pqa's
    weak wording."""
    from gsrm.spanformat import QA_SYSTEM_PROMPT

    prompt, trained = _encoded("qa", "prm800k", train_wording)
    assert QA_SYSTEM_PROMPT in prompt and "Plan:" not in prompt
    assert "Answer: 9 eggs<|im_end|>" in trained and "Work out" not in trained
    assert ("How many eggs?" in trained) is wording_trained
    if not wording_trained:
        assert trained.startswith("Question:\nAnswer: 9 eggs")


COPIED = "so there are exactly 10 cartons and no leftover eggs"


@pytest.mark.slow
@pytest.mark.parametrize(("span_format", "answer", "mask", "answer_trained"), [
    ("pqa", COPIED, True, False),  # a copy of its span: out of the loss
    ("pqa", COPIED, False, True),  # the option off: trained as before
    ("pqa", "10 cartons", True, True),  # a brief result: trained
    ("tags", COPIED, True, False),  # the tagged format finds its answer line too
])
def test_a_copied_answer_can_be_kept_out_of_the_loss(span_format: str, answer: str, mask: bool,
                                                     answer_trained: bool) -> None:
    """``gsrm-train sft --mask-copied-answers``: the answer text of a describer row that
    copies six words or more of its span is masked; its header, the human wording and the end
    of turn are still trained."""
    from transformers import AutoTokenizer

    from gsrm.spanformat import get_span_format
    from gsrm.weights import default_model_dir
    from training.data import SFTExample
    from training.sft import IGNORE, copied_answer, encode

    tok = AutoTokenizer.from_pretrained(default_model_dir())
    fmt = get_span_format(span_format)
    target = fmt.render("Count the cartons.", "How many cartons?", answer)
    ex = SFTExample(id="x", source="gsm8k-socratic", split="train", problem="Eggs?",
                    reasoning=f"60 / 6 = 10, {COPIED}.", target=target, layout="span",
                    n_steps=1)
    assert copied_answer(ex, span_format) is (answer == COPIED)
    enc = encode(tok, ex, 2048, span_format, mask_copied_answers=mask)
    assert enc is not None
    trained = tok.decode([i for i, lab in zip(enc["input_ids"], enc["labels"])
                          if lab != IGNORE])
    assert (answer in trained) is answer_trained
    assert "How many cartons?" in trained and trained.endswith("<|im_end|>\n")


@pytest.mark.parametrize(("question", "meta"), [
    # the shapes question_body already turned
    ("How many eggs does Janet sell?", "Work out how many eggs Janet sells."),
    # modal and "be" questions: the auxiliary moves after the subject
    ("How much will Billy be paid in total?", "Work out how much Billy will be paid in total."),
    ("How old is Mark?", "Work out how old Mark is."),
    # a noun-phrase subject runs to the first known verb
    ("How much will the potting soil cost him?",
     "Work out how much the potting soil will cost him."),
    ("How far did the bus travel?", "Work out how far the bus travelled."),
    # no safe turn: the question itself, never a fixed "Answer this:" opener
    ("How much do 6 pencils cost?", "How much do 6 pencils cost?"),
    ("Write an equation", "Write an equation."),
])
def test_describer_meta_wording(question: str, meta: str) -> None:
    from training.descdata import describe_meta

    assert describe_meta(0, 3, question, random.Random(0)) == meta


@pytest.mark.parametrize(("span_format", "want"), [
    ("tags", ("[Meta-reasoning 1]: Find the clips.\n[Sub-problem 1]: How many clips?\n"
              "[Answer 1]: 24 clips")),
    ("pqa", "Plan: Find the clips.\nQuestion: How many clips?\nAnswer: 24 clips"),
    ("qa", "Question: How many clips?\nAnswer: 24 clips"),  # the plan is derived, not trained
])
def test_describer_targets_are_written_in_the_chosen_span_format(span_format: str,
                                                                 want: str) -> None:
    from training.descdata import target_for

    assert target_for("Find the clips.", "How many clips?", "24 clips", span_format) == want


STEP = "That's right. So there are $5$ ways to choose the four letters from the word."


@pytest.mark.parametrize(("rule", "answer"), [
    # the shipped describer's rule: no "=", so the last sentence's last ten words
    ("short", "$5$ ways to choose the four letters from the word"),
    # the long-trace rule: the sentence's last value with its unit word
    ("result", "$5$ ways"),
])
def test_describer_answers_follow_the_chosen_answer_rule(rule: str, answer: str) -> None:
    from training.descdata import get_answer_rule, weak_examples
    from training.segdata import StepTrace

    tr = StepTrace(id="t", source="prm800k", problem="Letters?", steps=(STEP,), split="train")
    row, = weak_examples(tr, random.Random(0), answer=get_answer_rule(rule))
    assert row.target.endswith(f"[Answer 1]: {answer}")


def test_an_unknown_answer_rule_is_refused_before_any_data_is_read(tmp_path: Path,
                                                                   capsys) -> None:
    from training.cli import main

    rc = main(["describer-data", "--data", str(tmp_path / "absent"), "--out",
               str(tmp_path / "out"), "--answer-rule", "nope"])
    assert rc == 2
    assert "unknown answer rule 'nope'; known: short, result" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("kind", ["socratic", "weak"])
def test_describer_rows_carry_the_previous_step_as_context(kind: str) -> None:
    """Each describer row keeps the text of the step before its span (empty for a first
    step), which a ``previous`` span format shows in the prompt; the span is never its own
    context."""
    from training.descdata import socratic_examples, weak_examples
    from training.segdata import StepTrace

    steps = ("She has 16 - 3 = 13 eggs.", "She sells 13 - 4 = 9 eggs.", "So 9 * 2 = $18.")
    tr = StepTrace(id="t", source="gsm8k", problem="Eggs?", steps=steps, split="train",
                   questions=("How many are left?", "How many does she sell?",
                              "How much does she make?"))
    rows = (list(socratic_examples(tr, random.Random(0))) if kind == "socratic" else
            list(weak_examples(tr, random.Random(0), per_trace=3)))
    assert [r.context for r in rows] == ["", steps[0], steps[1]]
    assert all(r.reasoning.endswith(s) for r, s in zip(rows, steps, strict=True))


@pytest.mark.slow
def test_describer_rows_encode_their_previous_step_in_a_previous_format() -> None:
    from transformers import AutoTokenizer

    from gsrm.spanformat import PREVIOUS_HEADING
    from gsrm.weights import default_model_dir
    from training.data import SFTExample
    from training.sft import IGNORE, encode

    tok = AutoTokenizer.from_pretrained(default_model_dir())
    ex = SFTExample(id="x", source="gsm8k-socratic", split="train", problem="Eggs?",
                    reasoning="So that's 9 eggs.", context="She has 16 - 7 = 9 eggs left.",
                    target="[Meta-reasoning 1]: m\n[Sub-problem 1]: q?\n[Answer 1]: 9 eggs",
                    layout="span", n_steps=1)
    for name, shown in (("tags-prev", True), ("tags", False)):
        enc = encode(tok, ex, 2048, name)
        assert enc is not None
        n_prompt = next(k for k, lab in enumerate(enc["labels"]) if lab != IGNORE)
        prompt = tok.decode(enc["input_ids"][:n_prompt])
        assert (f"{PREVIOUS_HEADING}\nShe has 16 - 7 = 9 eggs left." in prompt) is shown
        # the context is prompt, never target
        assert "16 - 7" not in tok.decode([i for i, lab in zip(enc["input_ids"], enc["labels"])
                                            if lab != IGNORE])
