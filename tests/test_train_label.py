"""Tests for ``training/label.py``: the teacher-LLM labeller behind ``gsrm-train label``.

Pure pieces (validation rule, input parsing, payloads, cache keys) are tested without a
network; the transport is tested with the real ``openai`` client against the loopback stub in
``tests/openai_stub.py``, whose reply function picks a canned answer from the problem text.
"""

from __future__ import annotations

import argparse
import json
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from gsrm.io import InputError
from gsrm.parse import parse_structure
from gsrm.prompts import build_messages, render_structure
from gsrm.structure import Structure
from tests.openai_stub import chat_response, openai_stub
from training.label import (
    LabelItem,
    Reply,
    add_arguments,
    cache_key,
    item_from_obj,
    iter_items,
    parse_shots,
    request_payload,
    run,
    validate_reply,
)

GOOD = (
    "[Meta-reasoning 1]: First find how many eggs are left.\n"
    "[Sub-problem 1]: How many eggs are left after breakfast?\n"
    "[Answer 1]: 13\n"
    "[Meta-reasoning 2]: Then price the eggs that are sold.\n"
    "[Sub-problem 2]: How much do 13 eggs at $2 bring?\n"
    "[Answer 2]: $26\n"
    "So the final answer is: 26"
)


# --------------------------------------------------------------------------- validation rule
@pytest.mark.parametrize(
    ("text", "finish", "reason", "n_steps"),
    [
        # a clean canonical reply is kept
        (GOOD, "stop", None, 2),
        # no final-answer line is only a warning, not a reason to drop a well-formed label
        (GOOD.rsplit("\n", 1)[0], "stop", None, 2),
        # other tag spellings are repaired by the parser (warned), and the label kept
        ("[sub-think 1]: start\n[Query 1]: What is 2+3?\n[Answer 1]: 5", "stop", None, 1),
        # an empty or whitespace reply is its own reason (a server/moderation problem)
        ("", "stop", "empty_reply", 0),
        ("  \n ", "stop", "empty_reply", 0),
        # cut off at max_tokens: the last step may be half a sentence even though it parses
        (GOOD, "length", "truncated", 2),
        # prose with no tags at all has no steps
        ("First 16 - 3 = 13, then 13 * 2 = 26. The answer is 26.", "stop", "no_steps", 0),
        # a step missing its answer: the GSRM must never be trained to omit parts
        ("[Meta-reasoning 1]: m\n[Sub-problem 1]: q?\n", "stop", "incomplete_step", 1),
        # a later step missing its meta-reasoning also drops the whole label
        (GOOD.replace("[Meta-reasoning 2]: Then price the eggs that are sold.\n", ""), "stop",
         "incomplete_step", 2),
        # a tag with blank content counts as missing
        ("[Meta-reasoning 1]:   \n[Sub-problem 1]: q?\n[Answer 1]: 5", "stop",
         "incomplete_step", 1),
    ],
)
def test_validate_reply(text: str, finish: str, reason: str | None, n_steps: int) -> None:
    structure, why = validate_reply(Reply(text, finish))
    assert why == reason
    assert structure.n_steps == n_steps


def test_validate_reply_keeps_parser_warnings() -> None:
    """Repairs are recorded, so labels can be filtered later; the target is canonical anyway."""
    structure, why = validate_reply(Reply("[Query 1]: q?\n[Answer 1]: 5", "stop"))
    assert why == "incomplete_step"  # no meta-reasoning
    structure, why = validate_reply(Reply("[sub-think 1]: m\n[Query 1]: q?\n[Answer 1]: 5"))
    assert why is None
    assert "read tag spelling [query] as [sub-problem]" in structure.warnings
    assert render_structure(structure).startswith("[Meta-reasoning 1]: m\n[Sub-problem 1]: q?")


# --------------------------------------------------------------------------- input lines
@pytest.mark.parametrize(
    ("obj", "message"),
    [
        # the line is JSON but not an object
        ([1, 2], "t.jsonl:7: expected a JSON object, got list"),
        # both texts are required
        ({"reasoning": "r"}, "t.jsonl:7: field 'problem': is missing"),
        ({"problem": "p"}, "t.jsonl:7: field 'reasoning': is missing"),
        # blank text cannot be labelled
        ({"problem": "p", "reasoning": "  "}, "t.jsonl:7: field 'reasoning': is empty"),
        ({"problem": "p", "reasoning": 3}, "t.jsonl:7: field 'reasoning': must be a string, got int"),
        # ids must be stable keys for resuming: strings or integers only (bool is not an int here)
        ({"id": True, "problem": "p", "reasoning": "r"},
         "t.jsonl:7: field 'id': must be a string or an integer, got bool"),
        ({"id": 1.5, "problem": "p", "reasoning": "r"},
         "t.jsonl:7: field 'id': must be a string or an integer, got float"),
        ({"id": "", "problem": "p", "reasoning": "r"}, "t.jsonl:7: field 'id': is empty"),
    ],
)
def test_item_from_obj_errors(obj: Any, message: str) -> None:
    with pytest.raises(InputError) as exc:
        item_from_obj(obj, "t.jsonl", 7)
    assert str(exc.value) == message


def test_item_ids_default_to_line_number(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    path.write_text('{"problem": "p", "reasoning": "r"}\n\n'
                    '{"id": "x", "problem": "p", "reasoning": "r", "extra": 1}\n')
    items = list(iter_items(path))
    # the blank line 2 is skipped but still counted: the second item is line 3
    assert items == [LabelItem(1, "p", "r", 1), LabelItem("x", "p", "r", 3)]


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        # bad JSON on line 2
        (['{"problem": "p", "reasoning": "r"}', '{"problem": '], ":2: invalid JSON"),
        # a duplicate id would make resuming ambiguous
        (['{"id": 5, "problem": "p", "reasoning": "r"}', '{"id": 5, "problem": "q", "reasoning": "r"}'],
         ":2: field 'id': duplicate id 5 (first on line 1)"),
        # the default id (line number) collides with an explicit integer id
        (['{"problem": "p", "reasoning": "r"}', '{"id": 1, "problem": "q", "reasoning": "r"}'],
         ":2: field 'id': duplicate id 1 (first on line 1)"),
    ],
)
def test_iter_items_errors(tmp_path: Path, lines: list[str], message: str) -> None:
    path = tmp_path / "t.jsonl"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(InputError) as exc:
        list(iter_items(path))
    assert str(exc.value).startswith(str(path) + message)


# --------------------------------------------------------------------------- payloads, cache keys
def test_request_payload_is_our_few_shot_prompt() -> None:
    item = LabelItem("a", "What is 2+3?", "2 plus 3 is 5.", 1)
    payload = request_payload(item, "gpt-4o", ("math", "puzzle"), 0.0, 512)
    assert payload == {
        "model": "gpt-4o",
        "messages": build_messages("What is 2+3?", "2 plus 3 is 5.", shots=["math", "puzzle"]),
        "temperature": 0.0,
        "max_tokens": 512,
    }
    # system + two shots (user/assistant each) + the query
    assert [m["role"] for m in payload["messages"]] == ["system", "user", "assistant", "user",
                                                        "assistant", "user"]
    zero = request_payload(item, "gpt-4o", parse_shots("none"), 0.0, 512)
    assert [m["role"] for m in zero["messages"]] == ["system", "user"]


def test_parse_shots() -> None:
    assert parse_shots("math,puzzle") == ("math", "puzzle")
    assert parse_shots(" code , science ") == ("code", "science")
    assert parse_shots("") == ()
    with pytest.raises(argparse.ArgumentTypeError, match="unknown few-shot"):
        parse_shots("math,poetry")


def test_cache_key() -> None:
    msgs = build_messages("p", "r", shots=())
    # same model and messages: same key, whatever else differs
    assert cache_key("m", msgs) == cache_key("m", [dict(m) for m in msgs])
    # another teacher model is another label
    assert cache_key("m", msgs) != cache_key("m2", msgs)
    # another prompt (shots) is another label
    assert cache_key("m", msgs) != cache_key("m", build_messages("p", "r", shots=("math",)))
    assert len(cache_key("m", msgs)) == 64


# --------------------------------------------------------------------------- live runs (stub)
def _reply(body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    """Canned teacher: the problem text says which reply to give."""
    query = body["messages"][-1]["content"]
    if "BOOM" in query:
        return 500, {"error": {"message": "teacher exploded", "type": "server_error"}}
    if "NOSTEPS" in query:
        return 200, chat_response("The answer is 26.")
    if "HALF" in query:
        return 200, chat_response("[Meta-reasoning 1]: m\n[Sub-problem 1]: q?")
    if "LONG" in query:
        return 200, chat_response(GOOD, finish_reason="length")
    if "EMPTY" in query:
        return 200, chat_response("")
    return 200, chat_response(GOOD)


def _write_input(path: Path, problems: list[str], ids: bool = True) -> None:
    lines = []
    for i, p in enumerate(problems):
        obj: dict[str, Any] = {"problem": p, "reasoning": f"Reasoning for {p}: 16 - 3 = 13."}
        if ids:
            obj["id"] = f"t{i}"
        lines.append(json.dumps(obj))
    path.write_text("\n".join(lines) + "\n")


def _args(url: str, inp: Path, out: Path, *extra: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="gsrm-train label")
    add_arguments(parser)
    return parser.parse_args(["--api-base", url, "--model", "teacher", "--input", str(inp),
                              "--output", str(out), "--retries", "0", "--timeout", "20", *extra])


def _run(capsys: pytest.CaptureFixture[str], args: argparse.Namespace) -> tuple[int, dict]:
    code = run(args)
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    return code, summary


def _lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


def test_live_run_resume_and_cache(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    inp, out = tmp_path / "traces.jsonl", tmp_path / "out" / "labels.jsonl"
    _write_input(inp, ["eggs A", "eggs B", "NOSTEPS", "HALF", "LONG", "EMPTY"])
    with openai_stub(_reply) as (url, seen):
        code, s = _run(capsys, _args(url, inp, out, "--concurrency", "3"))
        assert code == 0
        assert (s["labelled"], s["failed"], s["cached"], s["skipped"], s["requests"]) == (2, 0, 0, 0, 6)
        assert s["dropped"] == {"empty_reply": 1, "incomplete_step": 1, "no_steps": 1,
                                "truncated": 1}
        assert s["dropped_total"] == 4 and s["total"] == 6
        # every request was exactly our few-shot prompt, greedy
        assert len(seen) == 6
        assert all(b["model"] == "teacher" and b["temperature"] == 0 for b in seen)
        first = next(b for b in seen if "eggs A" in b["messages"][-1]["content"])
        assert first["messages"] == build_messages("eggs A", "Reasoning for eggs A: 16 - 3 = 13.")

        rows = _lines(out)
        assert sorted(r["id"] for r in rows) == ["t0", "t1"]
        row = next(r for r in rows if r["id"] == "t0")
        assert set(row) == {"id", "problem", "reasoning", "target", "structure", "model",
                            "warnings"}
        assert row["problem"] == "eggs A" and row["model"] == "teacher"
        assert row["target"] == render_structure(parse_structure(GOOD)) == GOOD
        assert Structure.model_validate(row["structure"]).n_steps == 2
        assert row["warnings"] == []

        # resume: labelled ids are skipped; dropped ones are retried from the cache, no API call
        code, s = _run(capsys, _args(url, inp, out, "--concurrency", "3"))
        assert code == 0
        assert (s["labelled"], s["skipped"], s["cached"], s["requests"]) == (0, 2, 4, 0)
        assert s["dropped_total"] == 4
        assert len(seen) == 6 and len(_lines(out)) == 2

        # the same traces into a new output with the same cache: all cached, no API call
        other = tmp_path / "other.jsonl"
        code, s = _run(capsys, _args(url, inp, other, "--cache", str(out) + ".cache.jsonl"))
        assert (s["labelled"], s["cached"], s["requests"]) == (2, 6, 0)
        assert len(seen) == 6
        # another teacher model is not served from the cache
        code, s = _run(capsys, _args(url, inp, tmp_path / "m2.jsonl", "--model", "teacher2",
                                     "--limit", "1"))
        assert (s["labelled"], s["cached"], s["requests"], s["total"]) == (1, 0, 1, 1)
        assert len(seen) == 7


def test_half_written_output_line_is_redone(tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    """A crash mid-write leaves half a line: it is cut off and that item labelled again."""
    inp, out = tmp_path / "traces.jsonl", tmp_path / "labels.jsonl"
    _write_input(inp, ["a", "b"], ids=False)  # ids default to line numbers 1 and 2
    with openai_stub(_reply) as (url, seen):
        assert _run(capsys, _args(url, inp, out))[0] == 0
        rows = _lines(out)
        keep = next(r for r in rows if r["id"] == 1)
        out.write_text(json.dumps(keep) + "\n" + '{"id": 2, "problem": "b", "reas')
        code, s = _run(capsys, _args(url, inp, out))
    assert (code, s["skipped"], s["labelled"], s["cached"], s["requests"]) == (0, 1, 1, 1, 0)
    assert sorted(r["id"] for r in _lines(out)) == [1, 2]
    assert len(seen) == 2


def test_corrupt_output_line_stops(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A bad line in the middle of the output was not written by us: refuse to append."""
    inp, out = tmp_path / "traces.jsonl", tmp_path / "labels.jsonl"
    _write_input(inp, ["a"])
    out.write_text('{"id": "t0"}\nnot json\n{"id": "t1"}\n')
    with pytest.raises(InputError, match=r"labels\.jsonl:2: output file has invalid JSON"):
        run(_args("http://127.0.0.1:9/v1", inp, out))


def test_identical_traces_in_one_run_call_once(tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    """Two ids with the same problem and reasoning share one request, even when concurrent."""
    inp, out = tmp_path / "traces.jsonl", tmp_path / "labels.jsonl"
    line = {"problem": "same", "reasoning": "same trace"}
    inp.write_text("\n".join(json.dumps({"id": i, **line}) for i in range(4)) + "\n")

    def slow(body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        time.sleep(0.2)
        return _reply(body)

    with openai_stub(slow) as (url, seen):
        code, s = _run(capsys, _args(url, inp, out, "--concurrency", "4"))
    assert (code, s["labelled"], s["requests"], s["cached"]) == (0, 4, 1, 3)
    assert len(seen) == 1


def test_concurrency_is_bounded(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    inp, out = tmp_path / "traces.jsonl", tmp_path / "labels.jsonl"
    _write_input(inp, [f"p{i}" for i in range(8)])
    lock, now, peak = threading.Lock(), [0], [0]

    def counting(body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        with lock:
            now[0] += 1
            peak[0] = max(peak[0], now[0])
        time.sleep(0.2)
        with lock:
            now[0] -= 1
        return _reply(body)

    with openai_stub(counting) as (url, _):
        code, s = _run(capsys, _args(url, inp, out, "--concurrency", "3"))
    assert (code, s["labelled"]) == (0, 8)
    # requests overlapped, and never more than --concurrency at once
    assert 1 < peak[0] <= 3


def test_http_500_is_failed_not_a_label(tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    inp, out = tmp_path / "traces.jsonl", tmp_path / "labels.jsonl"
    _write_input(inp, ["ok", "BOOM"])
    with openai_stub(_reply) as (url, seen):
        code = run(_args(url, inp, out, "--retries", "1"))
    captured = capsys.readouterr()
    s = json.loads(captured.out.strip().splitlines()[-1])
    assert code == 1
    assert (s["labelled"], s["failed"], s["dropped_total"]) == (1, 1, 0)
    # one attempt plus one retry, both 500; the failing item is named on stderr
    assert sum("BOOM" in b["messages"][-1]["content"] for b in seen) == 2
    assert 'id "t1" (line 2): failed: HTTP 500' in captured.err
    # never written as a label, never cached: a re-run against a healthy server labels it
    assert [r["id"] for r in _lines(out)] == ["t0"]
    assert "teacher exploded" not in (tmp_path / "labels.jsonl.cache.jsonl").read_text()
    with openai_stub(lambda body: (200, chat_response(GOOD))) as (url, seen):
        code, s = _run(capsys, _args(url, inp, out))
    assert (code, s["labelled"], s["skipped"], s["failed"], len(seen)) == (0, 1, 1, 0, 1)


def test_bad_input_line_stops_before_any_request(tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    inp, out = tmp_path / "traces.jsonl", tmp_path / "labels.jsonl"
    inp.write_text('{"problem": "p", "reasoning": "r"}\n'
                   '{"problem": "p", "reasoning": "r2"}\n'
                   '{"problem": "p"}\n')
    with openai_stub(_reply) as (url, seen), pytest.raises(InputError) as exc:
        run(_args(url, inp, out))
    assert str(exc.value) == f"{inp}:3: field 'reasoning': is missing"
    assert seen == []
    assert not out.exists()


def test_missing_input_file(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="file not found"):
        run(_args("http://127.0.0.1:9/v1", tmp_path / "nope.jsonl", tmp_path / "o.jsonl"))


def test_cli_options(tmp_path: Path) -> None:
    """Defaults the lead's ``gsrm-train label`` inherits; bad values are argparse errors."""
    args = _args("http://x/v1", tmp_path / "i", tmp_path / "o")
    assert (args.concurrency, args.shots, args.temperature, args.limit, args.cache) == (
        8, ("math", "puzzle"), 0.0, None, None)
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    base = ["--api-base", "u", "--model", "m", "--input", "i", "--output", "o"]
    for bad in (["--concurrency", "0"], ["--shots", "poetry"], ["--retries", "-1"]):
        with pytest.raises(SystemExit):
            parser.parse_args(base + bad)
