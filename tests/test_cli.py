"""``gsrm`` CLI: ranking on the bundled examples, batch scoring, and bad input exiting 2."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from gsrm.backends import default_backend
from gsrm.cli import main

ROOT = Path(__file__).resolve().parents[1]
EX = ROOT / "examples"


def _score(capsys, *args: str) -> dict:
    assert main(["score", *args]) == 0
    return json.loads(capsys.readouterr().out)


@pytest.mark.parametrize("judge", ["lexical", "embedding"])
def test_prestructured_examples_rank_aligned_above_misaligned(capsys, judge: str) -> None:
    aligned = _score(capsys, str(EX / "teacher_steps.json"),
                     str(EX / "student_aligned_steps.json"), "--judge", judge)
    mis = _score(capsys, str(EX / "teacher_steps.json"),
                 str(EX / "student_misaligned_steps.json"), "--judge", judge)
    assert aligned["reward"] > mis["reward"]
    assert aligned["judge"] == judge and aligned["mode"] == "paper"
    # the teacher against itself scores the maximum: one point per teacher step
    selfscore = _score(capsys, str(EX / "teacher_steps.json"), str(EX / "teacher_steps.json"),
                       "--judge", judge)
    assert selfscore["reward"] == len(selfscore["teacher"]["steps"])


def test_llm_judge_ranks_examples(capsys) -> None:
    """The llm judge, against a loopback endpoint that answers like a sensible judge."""
    from gsrm.judges import token_f1
    from tests.openai_stub import chat_response, openai_stub

    def reply(body):
        text = body["messages"][-1]["content"]
        a = text.split("Text 1: ", 1)[1].split("\nText 2: ")[0]
        b = text.split("Text 2: ", 1)[1].split("\nAnswer yes or no.")[0]
        return 200, chat_response("yes" if token_f1(a, b) >= 0.3 else "no")

    with openai_stub(reply) as (url, _):
        args = ["--judge", "llm", "--judge-url", url]
        aligned = _score(capsys, str(EX / "teacher_steps.json"),
                         str(EX / "student_aligned_steps.json"), *args)
        mis = _score(capsys, str(EX / "teacher_steps.json"),
                     str(EX / "student_misaligned_steps.json"), *args)
    assert aligned["reward"] > mis["reward"]


def test_jsonl_batch_and_normalized_mode(capsys, tmp_path: Path) -> None:
    out = tmp_path / "scores.jsonl"
    assert main(["score", "--jsonl", str(EX / "pairs.jsonl"), "--judge", "lexical",
                 "--mode", "normalized", "--out", str(out)]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    # one result per line, in order (the ranking of the two students is the examples test's)
    assert len(rows) == 2 and [r["mode"] for r in rows] == ["normalized"] * 2
    assert rows[0]["student"]["final_answer"] is None and len(rows[0]["student"]["steps"]) == 4
    assert all(0.0 <= r["reward"] <= 1.0 for r in rows)


def test_raw_text_with_model_free_backend(capsys) -> None:
    r = _score(capsys, str(EX / "teacher.json"), str(EX / "student_aligned.json"),
               "--judge", "lexical", "--backend", "sentences")
    assert r["teacher"]["steps"] and r["student"]["steps"]
    assert r["teacher"]["generation"]["backend"] == "sentences"


def _write(tmp_path: Path, name: str, text: str) -> str:
    p = tmp_path / name
    p.write_text(text)
    return str(p)


BAD_INPUT = [
    # (id, file contents or None for a missing file, expected message fragment)
    ("missing-file", None, "file not found"),
    ("bad-json", '{"problem": "p", "reasoning": ', "invalid JSON"),
    ("not-object", '["a", "b"]', "expected a JSON object"),
    ("no-reasoning-or-steps", '{"problem": "p"}', "needs either 'reasoning'"),
    ("empty-reasoning", '{"problem": "p", "reasoning": "   "}', "field 'reasoning': reasoning is empty"),
    ("wrong-type", '{"problem": "p", "reasoning": 5}', "field 'reasoning'"),
    ("bad-step", '{"problem": "p", "steps": [{"meta": "m", "bogus": 1}]}', "field 'steps.0.bogus'"),
    ("both", '{"problem": "p", "reasoning": "r", "steps": [{"meta": "m"}]}', "not both"),
    # issue 17 row 1: think tags with nothing in them are as empty as "" (was: the model
    # invented steps for the empty text and the pair scored 0.5)
    ("think-tags-only", '{"problem": "p", "reasoning": "<think></think>"}',
     "field 'reasoning': reasoning is empty: no reasoning before </think>"),
    # ... and so is an answer with no reasoning before </think>
    ("answer-only", '{"problem": "p", "reasoning": "</think> 5"}', "field 'reasoning'"),
    # issue 17 row 10: an empty step list is an empty field (was: exit 0, reward 0.0)
    ("empty-steps", '{"problem": "p", "steps": []}', "field 'steps': steps has no steps"),
    # issue 17 row 7: 100,000 nested brackets (was: RecursionError traceback, exit 1)
    ("deep-nesting", "[" * 100_000 + "]" * 100_000, "invalid JSON: nested too deeply"),
    # issue 17 row 8: a lone surrogate, in the reasoning or in a step part (was: exit 1 with a
    # codec message that named no file)
    ("surrogate-reasoning", '{"problem": "p", "reasoning": "2 + 3 = 5 \\ud800"}',
     "field 'reasoning': reasoning is not valid Unicode"),
    ("surrogate-step", '{"problem": "p", "steps": [{"meta": "\\udfff"}]}',
     "field 'steps.0.meta': meta is not valid Unicode"),
    ("surrogate-problem", '{"problem": "\\ud83d", "reasoning": "r"}',
     "field 'problem': problem is not valid Unicode"),
]


@pytest.mark.parametrize("case", BAD_INPUT, ids=[c[0] for c in BAD_INPUT])
def test_bad_input_exits_2_naming_file_and_field(capsys, tmp_path: Path, case: tuple) -> None:
    _, content, fragment = case
    bad = str(tmp_path / "missing.json") if content is None else _write(tmp_path, "s.json", content)
    code = main(["score", str(EX / "teacher_steps.json"), bad, "--judge", "lexical"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and Path(bad).name in err and fragment in err
    assert "Traceback" not in err


BAD_JSONL = [
    # (id, jsonl contents, expected fragment): line numbers are named
    ("bad-json-line", '{"problem": "p", "teacher": "t", "student": "s"}\n{oops\n', ":2: invalid JSON"),
    ("missing-student", '{"problem": "p", "teacher": "t"}\n', ":1: field 'student': is missing"),
    ("empty-teacher", '{"problem": "p", "teacher": "", "student": "s"}\n', "field 'teacher': is empty"),
    ("bad-step", '{"problem": "p", "teacher": [{"meta": 3}], "student": "s"}\n',
     "field 'teacher[0].meta'"),
    ("empty-file", "\n", "no pairs in file"),
    # issue 17 row 1: a think-tags-only side is empty (the teacher and, in the CLI, the student)
    ("think-only-student", '{"problem": "p", "teacher": "t", "student": "<think></think>"}\n',
     ":1: field 'student': is empty: no reasoning before </think>"),
    # issue 17 row 7: nesting on line 2 names line 2
    ("deep-nesting", '{"problem": "p", "teacher": "t", "student": "s"}\n' + "[" * 100_000
     + "]" * 100_000 + "\n", ":2: invalid JSON: nested too deeply"),
    # issue 17 row 8: a lone surrogate in a side or in the problem
    ("surrogate-student", '{"problem": "p", "teacher": "t", "student": "a\\ud800"}\n',
     ":1: field 'student': is not valid Unicode"),
    ("surrogate-problem", '{"problem": "\\ud800", "teacher": "t", "student": "s"}\n',
     ":1: field 'problem': is not valid Unicode"),
]


@pytest.mark.parametrize("case", BAD_JSONL, ids=[c[0] for c in BAD_JSONL])
def test_bad_jsonl_exits_2_naming_line(capsys, tmp_path: Path, case: tuple) -> None:
    _, content, fragment = case
    path = _write(tmp_path, "pairs.jsonl", content)
    assert main(["score", "--jsonl", path, "--judge", "lexical"]) == 2
    assert fragment in capsys.readouterr().err


BAD_FLAGS = [
    # (flag, value) -- issue 17 row 9: each was accepted by `gsrm` (exit 0, reward 0.0) while
    # gsrm-serve refused it; both now read the limits from gsrm.validation
    ("--max-new-tokens", "-5"),  # the reported case
    ("--max-new-tokens", "0"),  # zero tokens generate nothing: not a decomposition
    ("--max-input-tokens", "0"),  # no room for the prompt
    ("--batch-size", "0"),  # no rows to decode
    ("--prompt-lookup", "-1"),  # 0 is off; below it means nothing
    ("--threads", "0"),  # torch needs a thread
]


@pytest.mark.parametrize("flag, value", BAD_FLAGS)
def test_out_of_range_flags_exit_2_like_the_server_refuses_them(capsys, flag: str,
                                                               value: str) -> None:
    from pydantic import ValidationError

    from server.settings import parse_settings

    with pytest.raises(SystemExit) as exc:
        main(["score", str(EX / "teacher_steps.json"), str(EX / "student_aligned_steps.json"),
              "--judge", "lexical", flag, value])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert f"argument {flag}: must be greater than" in err and f"(got {value})" in err
    setting = {"--batch-size": "--gen-batch-size"}.get(flag, flag)
    with pytest.raises(ValidationError):  # the same value is refused by the server's settings
        parse_settings([setting, value], env={})


def test_decompose_rejects_prestructured_trace(capsys) -> None:
    assert main(["decompose", str(EX / "teacher_steps.json"), "--backend", "sentences"]) == 2
    assert "field 'reasoning'" in capsys.readouterr().err


@pytest.mark.parametrize("content, fragment", [
    # issue 17 row 7: was a RecursionError traceback and exit 1
    ("[" * 100_000 + "]" * 100_000, "s.json: invalid JSON: nested too deeply"),
    # issue 17 row 8: was exit 1 and a codec message naming no file (the output could not be
    # encoded); now the file and the field
    ('{"problem": "p", "reasoning": "2 + 3 = 5 \\ud800"}',
     "s.json: field 'reasoning': reasoning is not valid Unicode"),
], ids=["deep-nesting", "lone-surrogate"])
def test_console_script_hostile_files_exit_2_with_one_line(tmp_path: Path, content: str,
                                                           fragment: str) -> None:
    bad = _write(tmp_path, "s.json", content)
    proc = subprocess.run(
        [sys.executable, "-m", "gsrm.cli", "score", str(EX / "teacher_steps.json"), bad,
         "--judge", "lexical"], check=False, capture_output=True, text=True, cwd=ROOT,
        timeout=120,
    )
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.count("\n") == 1 and fragment in proc.stderr, proc.stderr
    assert proc.stdout == ""


def test_console_script_bad_input_has_no_traceback(tmp_path: Path) -> None:
    """The real process: exit status 2 and a single stderr line."""
    proc = subprocess.run(
        [sys.executable, "-m", "gsrm.cli", "score", str(tmp_path / "nope.json"),
         str(EX / "student_aligned_steps.json")],
        check=False, capture_output=True, text=True, cwd=ROOT, timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().endswith("nope.json: file not found")
    assert "Traceback" not in proc.stderr and proc.stdout == ""


@pytest.mark.slow
def test_raw_text_examples_with_default_model(tmp_path: Path) -> None:
    """The README command: the default model decomposes both raw traces and a result prints."""
    out = tmp_path / "r.json"
    proc = subprocess.run(
        [sys.executable, "-m", "gsrm.cli", "score", str(EX / "teacher.json"),
         str(EX / "student_aligned.json"), "--out", str(out), "--max-new-tokens", "256"],
        check=False, capture_output=True, text=True, cwd=ROOT, timeout=900,
    )
    assert proc.returncode == 0, proc.stderr
    r = json.loads(out.read_text())
    assert r["teacher"]["generation"]["backend"] == default_backend()  # openvino on a CPU
    assert r["teacher"]["generation"]["completion_tokens"] > 0
    assert r["reward"] >= 0 and len(r["step_rewards"]) == min(
        len(r["teacher"]["steps"]), len(r["student"]["steps"]))


def _check_spans(rows: list[dict], traces: list[dict]) -> None:
    for row, t in zip(rows, traces, strict=True):
        text = t["reasoning"].split("</think>")[0].replace("<think>", "").strip()
        spans = [s["span"] for s in row["steps"]]
        assert spans and all(isinstance(s, list) and len(s) == 2 for s in spans)
        covered = "".join(text[a:b] for a, b in spans).replace(" ", "").replace("\n", "")
        assert covered == text.replace(" ", "").replace("\n", "")


SPAN_TRACES = [{"problem": "p", "reasoning": "First add 2 and 3. So 5.\n\nWait, check: 2 + 3 = 5."},
               {"problem": "q", "reasoning": "<think>Only one step</think> answer"}]


def test_decompose_jsonl_writes_spans(tmp_path) -> None:
    """``gsrm decompose --jsonl IN --out OUT``: one structure a line, every step with its span,
    the spans covering the trace (the model-free sentences backend; the two-stage default
    with the real model is the slow test below)."""
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps(t) + "\n" for t in SPAN_TRACES))
    out = tmp_path / "out.jsonl"
    assert main(["decompose", "--jsonl", str(src), "--out", str(out),
                 "--backend", "sentences"]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 2
    _check_spans(rows, SPAN_TRACES)


@pytest.mark.slow
def test_decompose_two_stage_default_writes_described_spans(tmp_path) -> None:
    """The default: the shipped segmenter's spans, each described by the default LM."""
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps(t) + "\n" for t in SPAN_TRACES))
    out = tmp_path / "out.jsonl"
    assert main(["decompose", "--jsonl", str(src), "--out", str(out)]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    _check_spans(rows, SPAN_TRACES)
    assert rows[0]["generation"]["backend"] == default_backend()
    assert sum(1 for st in rows[0]["steps"] if st["subproblem"] and st["answer"]) >= 1


def test_bad_segmenter_exits_2(tmp_path, capsys) -> None:
    src = tmp_path / "t.json"
    src.write_text(json.dumps({"problem": "p", "reasoning": "Add 2."}))
    assert main(["decompose", str(src), "--segmenter", str(tmp_path / "nowhere")]) == 2
    assert "segmenter" in capsys.readouterr().err


@pytest.mark.parametrize(("decomposer", "adapter", "want"), [
    # two-stage describes spans: the shipped per-span describer
    ("two-stage", "auto", "adapters/describer-qa"),
    ("two-stage", "describer-pqa-brief", "adapters/describer-pqa-brief"),
    ("two-stage", "describer", "adapters/describer"),
    # single-pass writes whole decompositions: the adapter trained for that
    ("single-pass", "auto", "cpu-small"),
    # an explicit choice is kept
    ("single-pass", "describer", "describer"),
])
def test_auto_adapter_follows_the_decomposer(decomposer: str, adapter: str, want: str) -> None:
    from gsrm.cli import backend_kwargs, build_parser

    args = build_parser().parse_args(["decompose", "x.json", "--decomposer", decomposer,
                                      "--adapter", adapter])
    kw = backend_kwargs(args)
    from gsrm.weights import resolve_adapter

    resolved = resolve_adapter(kw["adapter"], None)
    assert resolved is not None and resolved.rstrip("/").endswith(want)
    # the library builds the same way: GSRM.from_names maps "auto" like the CLI
    from gsrm.model import GSRM

    lib = GSRM.from_names(judge="lexical", decomposer=decomposer,
                          backend_kwargs={"adapter": adapter})
    assert str(lib.backend.adapter).rstrip("/").endswith(want)
