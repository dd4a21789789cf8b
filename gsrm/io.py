"""Reading user input files with errors that name the file, the line and the field.

Why: a CLI user who passes the wrong file should get one line saying what is wrong and where
(exit code 2), not a traceback; the same loaders serve the CLI, training and evaluation.

Example::

    >>> from gsrm.io import InputError
    >>> str(InputError("t.json", "reasoning", "is empty"))
    "t.json: field 'reasoning': is empty"
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from gsrm.structure import Step, Trace
from gsrm.validation import check_reasoning, unpaired_surrogate


class InputError(ValueError):
    """Bad user input: carries the file, optional line number and field for the message."""

    def __init__(self, path: str | os.PathLike[str], field: str | None, message: str,
                 line: int | None = None) -> None:
        self.path, self.field, self.line, self.message = str(path), field, line, message
        where = f"{self.path}:{line}" if line is not None else self.path
        what = f" field '{field}':" if field else ""
        super().__init__(f"{where}:{what} {message}")


def _first_error(exc: ValidationError) -> tuple[str | None, str]:
    err = exc.errors()[0]
    loc = ".".join(str(p) for p in err.get("loc", ()))
    msg = err.get("msg", "invalid").removeprefix("Value error, ")
    if err.get("type") == "missing":
        msg = "is missing"
    return loc or None, msg


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError(path, None, "file not found") from None
    except IsADirectoryError:
        raise InputError(path, None, "is a directory, expected a JSON file") from None
    except UnicodeDecodeError as exc:
        raise InputError(path, None, f"not UTF-8 text ({exc.reason})") from None
    except OSError as exc:
        raise InputError(path, None, exc.strerror or str(exc)) from None


def _loads(text: str, path: Path, line: int | None = None) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        ln = exc.lineno if line is None else line
        raise InputError(path, None, f"invalid JSON: {exc.msg} (column {exc.colno})", ln) from None
    except RecursionError:  # e.g. 100,000 nested brackets: no trace is shaped like that
        raise InputError(path, None, "invalid JSON: nested too deeply", line) from None


def trace_from_obj(obj: Any, path: Path, line: int | None = None, prefix: str = "") -> Trace:
    """Validate one trace object ({problem, reasoning | steps}) into a Trace."""
    if not isinstance(obj, dict):
        raise InputError(path, prefix.rstrip(".") or None,
                         f"expected a JSON object, got {type(obj).__name__}", line)
    try:
        return Trace.model_validate(obj)
    except ValidationError as exc:
        field, msg = _first_error(exc)
        raise InputError(path, prefix + (field or "") or None, msg, line) from None


def load_trace(path: str | os.PathLike[str]) -> Trace:
    """Load one JSON file holding ``problem`` and either ``reasoning`` or ``steps``."""
    p = Path(path)
    return trace_from_obj(_loads(_read_text(p), p), p)


def iter_jsonl(path: str | os.PathLike[str]) -> Iterator[tuple[int, Any]]:
    """(line number, parsed object) for each non-blank line; bad JSON names its line."""
    p = Path(path)
    for n, line in enumerate(_read_text(p).splitlines(), start=1):
        if line.strip():
            yield n, _loads(line, p, n)


def side_from_obj(obj: Any, path: Path, line: int, field: str) -> str | list[Step]:
    """A pairs-file side: raw reasoning text or a list of step objects."""
    if isinstance(obj, str):
        try:
            return check_reasoning(obj, "it")
        except ValueError as exc:  # the message names "it": the field comes first in ours
            raise InputError(path, field, str(exc).removeprefix("it "), line) from None
    if isinstance(obj, list):
        if not obj:
            raise InputError(path, field, "has no steps", line)
        steps: list[Step] = []
        for i, s in enumerate(obj):
            try:
                steps.append(Step.model_validate(s))
            except ValidationError as exc:
                sub, msg = _first_error(exc)
                raise InputError(path, f"{field}[{i}]" + (f".{sub}" if sub else ""), msg,
                                 line) from None
        return steps
    if obj is None:
        raise InputError(path, field, "is missing", line)
    raise InputError(path, field, "must be reasoning text or a list of steps", line)


def load_pairs(path: str | os.PathLike[str]) -> list[tuple[str, str | list[Step], str | list[Step]]]:
    """Load a JSONL of ``{"problem", "teacher", "student"}`` (each side text or steps)."""
    p = Path(path)
    out = []
    for n, obj in iter_jsonl(p):
        if not isinstance(obj, dict):
            raise InputError(p, None, f"expected a JSON object, got {type(obj).__name__}", n)
        problem = obj.get("problem", "")
        if not isinstance(problem, str):
            raise InputError(p, "problem", "must be a string", n)
        if unpaired_surrogate(problem) is not None:
            raise InputError(p, "problem", "is not valid Unicode (unpaired surrogate)", n)
        out.append((problem, side_from_obj(obj.get("teacher"), p, n, "teacher"),
                    side_from_obj(obj.get("student"), p, n, "student")))
    if not out:
        raise InputError(p, None, "no pairs in file")
    return out


def write_text_atomic(path: str | os.PathLike[str], text: str) -> None:
    """Write a file via a temporary sibling and rename, so readers never see half a file."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", dir=p.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, p)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
