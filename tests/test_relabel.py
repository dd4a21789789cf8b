"""``training.relabel``: weak describer rows reworded by a trained describer."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gsrm.spanformat import get_span_format
from gsrm.structure import Step
from training.data import BuildReport, SFTExample, load_examples, write_dataset
from training.relabel import needs_wording, relabel, reword


def _row(source: str, target: str, split: str = "train", **kw: object) -> SFTExample:
    return SFTExample(id=f"{source}:0", source=source, split=split, problem="Eggs?",  # type: ignore[arg-type]
                      reasoning="So 16 - 7 = 9 eggs are left.", target=target, layout="span",
                      n_steps=1, **kw)


PQA = get_span_format("pqa")
WEAK = PQA.render('Next, take the step that opens: "So 16 - 7..."', "So 16 - 7 = 9 eggs are left.",
                  "9 eggs")
HUMAN = PQA.render("Work out how many eggs are left.", "How many eggs are left?", "9 eggs")
GOOD = Step(meta="Find how many eggs are left.", subproblem="How many eggs are left?",
            answer="nine")


@pytest.mark.parametrize(("row", "step", "want_target", "want_trained", "count"), [
    # a weak row: the describer's wording, the data's answer (not the describer's "nine")
    (_row("prm800k", WEAK), GOOD,
     PQA.render("Find how many eggs are left.", "How many eggs are left?", "9 eggs"), True,
     "prm800k/reworded"),
    # a human row is never reworded, even when a step is given
    (_row("gsm8k-socratic", HUMAN), GOOD, HUMAN, None, None),
    # a row already reworded is not reworded again
    (_row("prm800k", HUMAN, train_wording=True), GOOD, HUMAN, True, None),
    # no step (not described): as it was
    (_row("bbm", WEAK), None, WEAK, None, None),
    # an empty part: kept masked, counted, never an empty part trained
    (_row("champ", WEAK), Step(meta="Find it.", subproblem="", answer="9"), WEAK, None,
     "champ/kept_masked"),
    (_row("champ", WEAK), Step(meta=" ", subproblem="How many?", answer="9"), WEAK, None,
     "champ/kept_masked"),
])
def test_reword_replaces_only_weak_wording(row: SFTExample, step: Step | None, want_target: str,
                                           want_trained: bool | None, count: str | None) -> None:
    [out], counts = reword([row], [step], "pqa")
    assert out.target == want_target
    assert out.train_wording is want_trained
    assert dict(counts) == ({count: 1} if count else {})


def test_reword_in_the_qa_format_keeps_no_plan() -> None:
    """A ``qa`` row reworded: the describer's question, the data's answer, no plan line
    (the describer's plan is dropped: the format derives it from the question)."""
    qa = get_span_format("qa")
    row = _row("prm800k", qa.render("", "So 16 - 7 = 9 eggs are left.", "9 eggs"))
    [out], counts = reword([row], [GOOD], "qa")
    assert out.target == "Question: How many eggs are left?\nAnswer: 9 eggs"
    assert out.train_wording is True and dict(counts) == {"prm800k/reworded": 1}


def test_reword_refuses_a_target_not_in_the_data_format() -> None:
    row = _row("prm800k", "[Meta-reasoning 1]: x\n[Sub-problem 1]: y\n[Answer 1]: z")
    with pytest.raises(ValueError, match="prm800k:0.*pqa"):
        reword([row], [GOOD], "pqa")


def test_needs_wording_follows_the_row_flag_over_its_source() -> None:
    assert needs_wording(_row("prm800k", WEAK))
    assert not needs_wording(_row("prm800k", WEAK, train_wording=True))
    assert not needs_wording(_row("gsm8k-socratic", HUMAN))
    assert needs_wording(_row("gsm8k-socratic", HUMAN, train_wording=False))


def test_rows_without_the_flag_are_written_as_before(tmp_path: Path) -> None:
    """Data built before the flag existed keeps its bytes (and its manifest's sha256)."""
    write_dataset([_row("prm800k", WEAK)], tmp_path, BuildReport(), {})
    line = (tmp_path / "train.jsonl").read_text()
    assert "train_wording" not in line
    write_dataset([_row("prm800k", WEAK, train_wording=True)], tmp_path, BuildReport(), {})
    assert json.loads((tmp_path / "train.jsonl").read_text())["train_wording"] is True


class _Describer:
    """A backend stand-in for the pure data flow: one fixed reply per prompt (the real
    describer runs in the slow test below)."""

    name, model_id, span_format, shots, prefix_warmup = "fake", "fake-model", "tags", 0, False

    def __init__(self, reply: str) -> None:
        self.reply = reply
        self.prompts = 0

    def generate(self, convs: list, max_new_tokens: int, stop: object = None) -> list:
        from gsrm.structure import Generation

        self.prompts += len(convs)
        return [Generation(text=self.reply, backend=self.name, model=self.model_id,
                           prompt_tokens=10, completion_tokens=10) for _ in convs]


def _data(tmp_path: Path) -> Path:
    rows = [_row("prm800k", WEAK), _row("gsm8k-socratic", HUMAN),
            _row("bbm", WEAK, split="validation").model_copy(
                update={"reasoning": "Then 9 * 2 = 18 dollars."}),
            _row("champ", WEAK, split="test")]
    write_dataset(rows, tmp_path / "in", BuildReport(), {"kind": "describer",
                                                        "span_format": "pqa"})
    return tmp_path / "in"


def test_relabel_writes_a_new_folder_with_what_reworded_it(tmp_path: Path) -> None:
    reply = ("[Meta-reasoning 1]: Find how many eggs are left.\n"
             "[Sub-problem 1]: How many eggs are left?\n[Answer 1]: 9")
    backend = _Describer(reply)
    manifest = relabel(_data(tmp_path), tmp_path / "out", backend, progress=False)
    assert backend.prompts == 2  # the weak train and validation rows; test rows untouched
    assert manifest["reworded"] == {"bbm/reworded": 1, "prm800k/reworded": 1}
    assert manifest["span_format"] == "pqa" and manifest["kind"] == "describer"
    assert manifest["reworded_by"] == {"backend": "fake", "model": "fake-model",
                                       "span_format": "tags"}
    train = {e.source: e for e in load_examples(tmp_path / "out" / "train.jsonl")}
    assert train["prm800k"].target == PQA.render("Find how many eggs are left.",
                                                 "How many eggs are left?", "9 eggs")
    assert train["gsm8k-socratic"].target == HUMAN
    [test] = load_examples(tmp_path / "out" / "test.jsonl")
    assert test.target == WEAK and test.train_wording is None


@pytest.mark.parametrize(("meta", "message"), [
    (None, "manifest.json: not found"),
    ({"kind": "sft"}, "kind is 'sft', not 'describer'"),
])
def test_relabel_refuses_a_folder_that_is_not_describer_data(tmp_path: Path, meta: dict | None,
                                                             message: str) -> None:
    if meta is not None:
        (tmp_path / "manifest.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match=message):
        relabel(tmp_path, tmp_path / "out", _Describer(""), progress=False)


def test_cli_refuses_to_overwrite_its_input(tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    from training.cli import main

    assert main(["describer-relabel", "--data-dir", str(tmp_path), "--out",
                 str(tmp_path)]) == 2
    assert "--out must differ from --data-dir" in capsys.readouterr().err


@pytest.mark.slow
def test_relabel_with_the_shipped_describer(tmp_path: Path) -> None:
    """The real path: the shipped describer on the openvino backend rewords a weak row."""
    from gsrm.backends import get_backend

    backend = get_backend("openvino", adapter="auto", threads=2)
    manifest = relabel(_data(tmp_path), tmp_path / "out", backend, progress=False)
    assert sum(manifest["reworded"].values()) == 2
    rows = {e.source: e for e in load_examples(tmp_path / "out" / "train.jsonl")}
    step = PQA.parse(rows["prm800k"].target)
    assert step is not None and step.answer == "9 eggs"
    assert step.subproblem and step.subproblem != "So 16 - 7 = 9 eggs are left."
