"""Label raw reasoning traces with a teacher LLM: the paper's own path to GSRM training data.

Why this exists: RLKD built its GSRM SFT set by asking GPT-4o to decompose DeepSeek-R1 traces
with few-shot prompts. ``gsrm-train label`` does the same through any OpenAI-compatible chat
endpoint (OpenAI, vLLM, SGLang, llama.cpp), with *our* prompt (``gsrm.prompts.build_messages``)
so the labels use the one canonical tag set, and with *our* parser (``gsrm.parse``) so a reply
the GSRM could not be trained on never reaches the training set.

Why it is built this way:

- **Concurrent**: teacher calls are slow and independent; ``--concurrency`` workers share one
  ``openai.AsyncOpenAI`` client (its own retry/backoff handles 429/5xx, ``--retries`` times).
- **Resumable**: every finished label is appended to the output as one JSON line and flushed,
  so a crash or Ctrl-C loses at most the requests in flight. On restart, ids already in the
  output are skipped; a half-written last line (a crash mid-write) is cut off and redone.
- **Cached**: each successful reply is appended to a JSONL cache next to the output
  (``<output>.cache.jsonl``), keyed by the SHA-256 of the model name and the exact messages.
  Re-labelling the same trace with the same model and prompt never calls the API twice, even
  across output files (pass the same ``--cache``), and even when the reply was dropped as
  invalid: the validation rule is re-applied to cached replies, so changing it costs nothing.
- **Honest about failures**: a request that still fails after its retries is counted as
  ``failed`` and named on stderr; it is never written as a label, never cached, and makes the
  exit code 1, so a re-run retries exactly those items.

Validation rule (``validate_reply``), applied in this order; the first that fails names the
drop reason counted in the summary:

1. ``empty_reply``: the reply text is empty or whitespace;
2. ``truncated``: the server stopped at ``--max-tokens`` (``finish_reason == "length"``), so
   the last step may be cut short even when it parses;
3. ``no_steps``: ``gsrm.parse.parse_structure`` finds no step;
4. ``incomplete_step``: some step has an empty (after stripping) meta-reasoning, sub-problem
   or answer.

Everything else is kept, with the parser's warnings (tag spellings it repaired, a missing
final-answer line, renumbered steps) recorded in the line for later filtering. The target is
re-rendered canonically, so those repairs never leak into training targets.

Output: one JSON object per line,
``{"id", "problem", "reasoning", "target", "structure", "model", "warnings"}``. This is SFT
data as it stands: the prompt is ``build_messages(problem, reasoning, shots=...)`` (a
fine-tuned adapter is prompted with ``shots=0``) and ``target`` is the assistant turn, exactly
the canonical ``render_structure`` text the GSRM must learn to produce; ``structure`` is the
same label as a ``gsrm.structure.Structure`` dict (steps, final answer, warnings).

Input: JSONL, one object per line with ``problem`` and ``reasoning`` (non-empty strings) and
an optional ``id`` (a string or an integer, unique in the file; default: the 1-based line
number). Other fields are ignored. A bad line raises ``gsrm.io.InputError`` naming the file
and line before any request is made.

Example::

    gsrm-train label --api-base http://127.0.0.1:8000/v1 --model gpt-4o \\
        --input r1_traces.jsonl --output labels.jsonl --concurrency 8
    # stdout, one line:
    # {"labelled": 97, "dropped": {"no_steps": 1}, "failed": 0, "cached": 0, ...}
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import sys
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from gsrm.io import InputError
from gsrm.parse import parse_structure
from gsrm.prompts import DEFAULT_SHOTS, Message, build_messages, render_structure
from gsrm.structure import Structure

DROP_REASONS: tuple[str, ...] = ("empty_reply", "truncated", "no_steps", "incomplete_step")
"""Why a reply is not kept, in the order ``validate_reply`` checks them."""

ItemId = str | int


# --------------------------------------------------------------------------- pure logic
@dataclass(frozen=True)
class LabelItem:
    """One trace to label, with the input line it came from (for error messages)."""

    id: ItemId
    problem: str
    reasoning: str
    line: int


@dataclass(frozen=True)
class Reply:
    """What the transport returns for one request: the text and why generation stopped."""

    text: str
    finish_reason: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0


def id_key(item_id: Any) -> str:
    """A hashable, type-preserving key for an id, so ``1`` and ``"1"`` stay different."""
    return json.dumps(item_id, ensure_ascii=False)


def item_from_obj(obj: Any, path: str | os.PathLike[str], line: int) -> LabelItem:
    """Validate one input object into a LabelItem; raises InputError naming file and line.

    >>> item_from_obj({"problem": "2+3?", "reasoning": "It is 5."}, "t.jsonl", 4).id
    4
    """
    if not isinstance(obj, dict):
        raise InputError(path, None, f"expected a JSON object, got {type(obj).__name__}", line)
    texts: dict[str, str] = {}
    for name in ("problem", "reasoning"):
        value = obj.get(name)
        if value is None:
            raise InputError(path, name, "is missing", line)
        if not isinstance(value, str):
            raise InputError(path, name, f"must be a string, got {type(value).__name__}", line)
        if not value.strip():
            raise InputError(path, name, "is empty", line)
        texts[name] = value
    item_id = obj.get("id", line)
    if isinstance(item_id, bool) or not isinstance(item_id, (str, int)):
        raise InputError(path, "id", f"must be a string or an integer, got "
                         f"{type(item_id).__name__}", line)
    if isinstance(item_id, str) and not item_id.strip():
        raise InputError(path, "id", "is empty", line)
    return LabelItem(item_id, texts["problem"], texts["reasoning"], line)


def iter_items(path: str | os.PathLike[str]) -> Iterator[LabelItem]:
    """Stream the input file's items (blank lines skipped); duplicate ids are an InputError.

    Streaming, not loading: teacher traces can be tens of KB each, so only the ids are kept.
    """
    p = Path(path)
    seen: dict[str, int] = {}
    try:
        fh = p.open(encoding="utf-8")
    except FileNotFoundError:
        raise InputError(p, None, "file not found") from None
    except IsADirectoryError:
        raise InputError(p, None, "is a directory, expected a JSONL file") from None
    except OSError as exc:
        raise InputError(p, None, exc.strerror or str(exc)) from None
    with fh:
        n = 0
        while True:
            n += 1
            try:
                raw = fh.readline()
            except UnicodeDecodeError as exc:
                raise InputError(p, None, f"not UTF-8 text ({exc.reason})", n) from None
            if not raw:
                return
            if not raw.strip():
                continue
            try:
                obj = json.loads(raw)
            except json.JSONDecodeError as exc:
                raise InputError(p, None, f"invalid JSON: {exc.msg} (column {exc.colno})",
                                 n) from None
            item = item_from_obj(obj, p, n)
            key = id_key(item.id)
            if key in seen:
                raise InputError(p, "id", f"duplicate id {key} (first on line {seen[key]})", n)
            seen[key] = n
            yield item


def parse_shots(value: str) -> tuple[str, ...]:
    """``--shots`` value: comma-separated few-shot domains; ``none`` or empty for zero-shot.

    >>> parse_shots("math, puzzle"), parse_shots("none")
    (('math', 'puzzle'), ())
    """
    from gsrm.fewshot import FEW_SHOTS

    if value.strip().lower() in ("", "none", "0"):
        return ()
    names = tuple(s.strip() for s in value.split(",") if s.strip())
    unknown = [n for n in names if n not in FEW_SHOTS]
    if unknown:
        raise argparse.ArgumentTypeError(
            f"unknown few-shot domain(s) {unknown}; known: {', '.join(sorted(FEW_SHOTS))}")
    return names


def request_payload(item: LabelItem, model: str, shots: Sequence[str], temperature: float,
                    max_tokens: int) -> dict[str, Any]:
    """The exact keyword arguments of ``chat.completions.create`` for one item.

    >>> p = request_payload(LabelItem(1, "2+3?", "5.", 1), "m", (), 0.0, 64)
    >>> sorted(p), [m["role"] for m in p["messages"]]
    (['max_tokens', 'messages', 'model', 'temperature'], ['system', 'user'])
    """
    return {
        "model": model,
        "messages": build_messages(item.problem, item.reasoning, shots=list(shots)),
        "temperature": temperature,
        "max_tokens": max_tokens,
    }


def cache_key(model: str, messages: Sequence[Message]) -> str:
    """SHA-256 of the model name and the exact messages (canonical JSON).

    Why only these: they determine what the teacher is asked; sampling settings are left out
    so a re-run with another ``--max-tokens`` still reuses labels already paid for (a reply
    cut short is dropped as ``truncated`` by the rule, not trusted).

    >>> cache_key("m", [{"role": "user", "content": "x"}]) == cache_key("m", [{"role": "user", "content": "x"}])
    True
    """
    blob = json.dumps({"model": model, "messages": list(messages)}, sort_keys=True,
                      ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def validate_reply(reply: Reply) -> tuple[Structure, str | None]:
    """Parse a teacher reply; return (structure, drop reason or None when the label is kept).

    The rule is the module docstring's, checked in the order of ``DROP_REASONS``.

    >>> s, why = validate_reply(Reply("[Meta-reasoning 1]: m\\n[Sub-problem 1]: q?\\n[Answer 1]: 5"))
    >>> (s.n_steps, why)
    (1, None)
    >>> validate_reply(Reply("The answer is 5."))[1]
    'no_steps'
    """
    structure = parse_structure(reply.text or "")
    if not (reply.text or "").strip():
        return structure, "empty_reply"
    if reply.finish_reason == "length":
        return structure, "truncated"
    if not structure.steps:
        return structure, "no_steps"
    if not all(step.is_complete for step in structure.steps):
        return structure, "incomplete_step"
    return structure, None


def label_record(item: LabelItem, structure: Structure, model: str) -> dict[str, Any]:
    """The output line for a kept label (directly usable as an SFT example)."""
    return {
        "id": item.id,
        "problem": item.problem,
        "reasoning": item.reasoning,
        "target": render_structure(structure),
        "structure": structure.model_dump(mode="json", include={"steps", "final_answer",
                                                                "warnings"}),
        "model": model,
        "warnings": list(structure.warnings),
    }


@dataclass
class Summary:
    """Counts for the final JSON line; ``failed_ids`` go to stderr, not into the summary."""

    total: int = 0
    labelled: int = 0
    dropped: Counter[str] = field(default_factory=Counter)
    failed: int = 0
    cached: int = 0
    requests: int = 0
    skipped: int = 0
    seconds: float = 0.0
    output: str = ""
    cache: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "total": self.total,
            "labelled": self.labelled,
            "dropped": dict(sorted(self.dropped.items())),
            "dropped_total": sum(self.dropped.values()),
            "failed": self.failed,
            "cached": self.cached,
            "requests": self.requests,
            "skipped": self.skipped,
            "seconds": round(self.seconds, 3),
            "output": self.output,
            "cache": self.cache,
        }


# --------------------------------------------------------------------------- files
def _repair_tail(path: Path) -> None:
    """Make an append-only JSONL file end in a newline: a crash mid-write leaves half a line.

    A last line that still parses only lacks its newline (it is kept); one that does not is
    the half-written record of a crash and is cut off (its item is redone).
    """
    if not path.exists() or path.stat().st_size == 0:
        return
    with path.open("rb+") as fh:
        fh.seek(-1, os.SEEK_END)
        if fh.read(1) == b"\n":
            return
        fh.seek(0)
        data = fh.read()
        cut = data.rfind(b"\n") + 1
        try:
            json.loads(data[cut:])
            fh.seek(0, os.SEEK_END)
            fh.write(b"\n")
        except ValueError:
            print(f"label: {path}: dropped a half-written last line", file=sys.stderr)
            fh.truncate(cut)


def done_ids(path: Path) -> set[str]:
    """Keys (``id_key``) of the items already in an output file; a corrupt line is an error."""
    if not path.exists():
        return set()
    _repair_tail(path)
    done: set[str] = set()
    with path.open(encoding="utf-8") as fh:
        for n, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise InputError(path, None, f"output file has invalid JSON: {exc.msg}; "
                                 "not appending to it", n) from None
            if not isinstance(obj, dict) or "id" not in obj:
                raise InputError(path, "id", "output line has no id; not appending to it", n)
            done.add(id_key(obj["id"]))
    return done


def load_cache(path: Path) -> dict[str, Reply]:
    """Replies by cache key; unreadable lines are skipped (the cache is only an optimisation)."""
    if not path.exists():
        return {}
    _repair_tail(path)
    out: dict[str, Reply] = {}
    with path.open(encoding="utf-8") as fh:
        for line in fh:
            try:
                obj = json.loads(line)
                out[obj["key"]] = Reply(obj["text"], obj.get("finish_reason"),
                                        obj.get("prompt_tokens", 0),
                                        obj.get("completion_tokens", 0))
            except (ValueError, KeyError, TypeError):
                continue
    return out


def _append(fh: IO[str], obj: dict[str, Any]) -> None:
    """One JSON line, flushed at once, so a crash loses nothing already finished."""
    fh.write(json.dumps(obj, ensure_ascii=False) + "\n")
    fh.flush()


# --------------------------------------------------------------------------- transport
class RequestFailed(RuntimeError):
    """A request that failed after the client's retries (HTTP error, timeout, bad body)."""


async def _complete(client: Any, payload: dict[str, Any]) -> Reply:
    """One chat completion; every failure becomes RequestFailed with a one-line reason."""
    try:
        resp = await client.chat.completions.create(**payload)
    except Exception as exc:  # openai.APIError and subclasses, httpx errors, timeouts
        status = getattr(exc, "status_code", None)
        prefix = f"HTTP {status}: " if status else ""
        raise RequestFailed(f"{prefix}{type(exc).__name__}: {exc}".splitlines()[0]) from exc
    if not getattr(resp, "choices", None):
        raise RequestFailed("the server returned no choices")
    choice = resp.choices[0]
    usage = getattr(resp, "usage", None)
    return Reply(
        text=(choice.message.content if choice.message else None) or "",
        finish_reason=choice.finish_reason,
        prompt_tokens=getattr(usage, "prompt_tokens", 0) or 0,
        completion_tokens=getattr(usage, "completion_tokens", 0) or 0,
    )


async def _label_all(args: argparse.Namespace, client: Any, summary: Summary, done: set[str],
                     cache: dict[str, Reply], out_fh: IO[str], cache_fh: IO[str]) -> None:
    """Run ``--concurrency`` workers over the input; write each result as it finishes."""
    shots: tuple[str, ...] = args.shots
    in_flight: dict[str, asyncio.Future[Reply]] = {}  # identical prompts in one run: one call
    items = iter_items(args.input)
    progress = _progress(summary.total)

    def todo() -> Iterator[LabelItem]:
        for i, item in enumerate(items):
            if args.limit is not None and i >= args.limit:
                return
            if id_key(item.id) in done:
                summary.skipped += 1
                progress.update(1)
                continue
            yield item

    queue = todo()

    async def get_reply(payload: dict[str, Any]) -> tuple[Reply, bool]:
        key = cache_key(payload["model"], payload["messages"])
        if key in cache:
            return cache[key], True
        if key in in_flight:
            return await asyncio.shield(in_flight[key]), True
        fut: asyncio.Future[Reply] = asyncio.get_running_loop().create_future()
        in_flight[key] = fut
        try:
            summary.requests += 1
            reply = await _complete(client, payload)
        except RequestFailed as exc:
            fut.set_exception(exc)
            fut.exception()  # mark retrieved: waiters (if any) re-raise it themselves
            raise
        except BaseException:  # cancelled (Ctrl-C): waiters are cancelled with us
            fut.cancel()
            raise
        finally:
            in_flight.pop(key, None)
        cache[key] = reply
        _append(cache_fh, {"key": key, "model": payload["model"], "text": reply.text,
                           "finish_reason": reply.finish_reason,
                           "prompt_tokens": reply.prompt_tokens,
                           "completion_tokens": reply.completion_tokens})
        fut.set_result(reply)
        return reply, False

    async def worker() -> None:
        for item in queue:  # one event-loop thread: next() on the shared generator is safe
            payload = request_payload(item, args.model, shots, args.temperature,
                                      args.max_tokens)
            try:
                reply, hit = await get_reply(payload)
            except RequestFailed as exc:
                summary.failed += 1
                print(f"label: id {id_key(item.id)} (line {item.line}): failed: {exc}",
                      file=sys.stderr)
                progress.update(1)
                continue
            summary.cached += int(hit)
            structure, reason = validate_reply(reply)
            if reason is None:
                _append(out_fh, label_record(item, structure, args.model))
                summary.labelled += 1
            else:
                summary.dropped[reason] += 1
            progress.update(1)

    try:
        await asyncio.gather(*(worker() for _ in range(args.concurrency)))
    finally:
        progress.close()


def _progress(total: int) -> Any:
    """A tqdm bar on stderr when it is a terminal; silent otherwise (logs, tests)."""
    from tqdm import tqdm

    return tqdm(total=total, unit="trace", disable=not sys.stderr.isatty(), file=sys.stderr)


# --------------------------------------------------------------------------- CLI
def _positive_int(value: str) -> int:
    n = int(value)
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {n}")
    return n


def _non_negative_int(value: str) -> int:
    n = int(value)
    if n < 0:
        raise argparse.ArgumentTypeError(f"must be at least 0, got {n}")
    return n


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``label`` subcommand's options to ``parser``."""
    parser.add_argument("--api-base", required=True,
                        help="OpenAI-compatible base URL ending in /v1 "
                             "(e.g. http://127.0.0.1:8000/v1 or https://api.openai.com/v1)")
    parser.add_argument("--model", required=True, help="teacher model name, e.g. gpt-4o")
    parser.add_argument("--input", required=True, type=Path,
                        help="JSONL of {id?, problem, reasoning} traces to label")
    parser.add_argument("--output", required=True, type=Path,
                        help="JSONL to append kept labels to (SFT-ready); ids already there "
                             "are skipped, so re-running resumes")
    parser.add_argument("--api-key", default=None,
                        help="API key (default: $OPENAI_API_KEY, else 'EMPTY' for local servers)")
    parser.add_argument("--cache", type=Path, default=None,
                        help="reply cache JSONL (default: <output>.cache.jsonl)")
    parser.add_argument("--concurrency", type=_positive_int, default=8,
                        help="requests in flight at once (default: %(default)s)")
    parser.add_argument("--shots", type=parse_shots, default=tuple(DEFAULT_SHOTS),
                        help="few-shot domains, comma-separated (math,code,science,puzzle), or "
                             "'none' (default: " + ",".join(DEFAULT_SHOTS) + ")")
    parser.add_argument("--max-tokens", type=_positive_int, default=4096,
                        help="reply limit; a reply that hits it is dropped as truncated "
                             "(default: %(default)s)")
    parser.add_argument("--temperature", type=float, default=0.0,
                        help="sampling temperature (default: %(default)s, greedy)")
    parser.add_argument("--limit", type=_non_negative_int, default=None,
                        help="label only the first N input items (for a trial run)")
    parser.add_argument("--timeout", type=float, default=120.0,
                        help="seconds per request attempt (default: %(default)s)")
    parser.add_argument("--retries", type=_non_negative_int, default=3,
                        help="retries per request on connection errors, 408/409/429 and 5xx, "
                             "with exponential backoff (default: %(default)s)")


def run(args: argparse.Namespace) -> int:
    """Label ``args.input`` into ``args.output``; print one JSON summary line.

    Returns 0, or 1 when any request failed after its retries. Raises InputError for a bad
    input line (file and line number) before any request is made.
    """
    from openai import AsyncOpenAI

    start = time.perf_counter()
    output = Path(args.output)
    cache_path = Path(args.cache) if args.cache else output.with_name(output.name + ".cache.jsonl")
    summary = Summary(output=str(output), cache=str(cache_path))
    # validate the whole input first: a bad line must stop us before any money is spent
    for i, _ in enumerate(iter_items(args.input)):
        if args.limit is None or i < args.limit:
            summary.total += 1
    done = done_ids(output)
    cache = load_cache(cache_path)
    output.parent.mkdir(parents=True, exist_ok=True)
    cache_path.parent.mkdir(parents=True, exist_ok=True)
    api_key = args.api_key or os.environ.get("OPENAI_API_KEY") or "EMPTY"

    async def main(out_fh: IO[str], cache_fh: IO[str]) -> None:
        client = AsyncOpenAI(base_url=args.api_base, api_key=api_key, timeout=args.timeout,
                             max_retries=args.retries)
        try:
            await _label_all(args, client, summary, done, cache, out_fh, cache_fh)
        finally:
            await client.close()

    with output.open("a", encoding="utf-8") as out_fh, \
            cache_path.open("a", encoding="utf-8") as cache_fh:
        asyncio.run(main(out_fh, cache_fh))
    summary.seconds = time.perf_counter() - start
    print(json.dumps(summary.to_dict()), flush=True)
    return 1 if summary.failed else 0
