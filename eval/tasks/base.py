"""What every evaluation task shares: its context, its result rows, and lenient loaders.

Why lenient loaders: an evaluation corpus is read as a whole, so one malformed line must not
end the run (``gsrm.io.iter_jsonl`` stops at the first bad line, which is right for a CLI
input file and wrong here). Loaders collect ``path:line: problem`` strings, skip the line,
and the report lists them.

A task is evaluated once per system: the runner asks it for the ``(problem, reasoning)``
pairs it needs decomposed (``requests``), decomposes them through the cache, and hands the
structures back in the same order to ``evaluate``, which returns one ``ResultRow`` per judge
(reward tasks) or one row (segmentation tasks) plus per-item details.
"""

from __future__ import annotations

import json
import os
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, Literal, TypeVar

from pydantic import BaseModel, Field, ValidationError

from gsrm.judges import Judge
from gsrm.structure import Structure

TaskKind = Literal["segmentation", "reward"]
Item = TypeVar("Item")

#: the data root: $GSRM_DATA, else ../shared/data next to the checkout
DEFAULT_DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"


def default_data_root() -> Path:
    """``$GSRM_DATA`` if set, else ``<checkout>/../shared/data``."""
    env = os.environ.get("GSRM_DATA")
    return Path(env).expanduser() if env else DEFAULT_DATA


class DataMissing(RuntimeError):
    """A task's data is not available here; the run skips the task with this note."""


@dataclass
class TaskContext:
    """Settings every task may read."""

    data_root: Path = field(default_factory=default_data_root)
    limit: int | None = None
    seed: int = 0
    char_tolerance: int = 10
    sent_tolerance: int = 0
    annotated: Path | None = None
    #: which split to run: ``test`` reports, ``dev`` is for choosing (``eval.splits``)
    split: str = "test"
    #: a checkout of MingLiiii/Schoenfeld_Reasoning for the optional ``schoenfeld-r1`` task
    schoenfeld: Path | None = None


@dataclass
class Loaded(Generic[Item]):
    """A task's items (already limited), the bad lines skipped, and how many were available."""

    items: list[Item]
    problems: list[str] = field(default_factory=list)
    available: int = 0


class ResultRow(BaseModel):
    """One line of a task's table: a system (and judge, for reward tasks) and its metrics."""

    system: str
    judge: str | None = None
    metrics: dict[str, float | int | None] = Field(default_factory=dict)
    notes: list[str] = Field(default_factory=list)
    confusion: list[list[int]] | None = Field(None, description="role confusion (ROLES order)")
    distributions: dict[str, list[float]] | None = Field(
        None, description="normalized rewards of aligned vs perturbed students, for plots")


@dataclass
class TaskOutput:
    """What one evaluation of one system returns."""

    rows: list[ResultRow]
    details: list[dict[str, Any]] = field(default_factory=list)


class Task(ABC, Generic[Item]):
    """A named evaluation: loads its data, says what to decompose, scores the structures."""

    name: str = "task"
    kind: TaskKind = "segmentation"
    description: str = ""
    #: generation budget per decomposition for model systems: enough for the typical trace
    max_new_tokens: int = 384

    @abstractmethod
    def load(self, ctx: TaskContext) -> Loaded[Item]:
        """Read the items (at most ``ctx.limit``); raise ``DataMissing`` to be skipped."""

    @abstractmethod
    def requests(self, items: Sequence[Item], ctx: TaskContext) -> list[tuple[str, str]]:
        """The (problem, reasoning) pairs to decompose, in the order ``evaluate`` expects."""

    @abstractmethod
    def evaluate(self, items: Sequence[Item], structures: Sequence[Structure], system: str,
                 judges: Mapping[str, Judge], ctx: TaskContext) -> TaskOutput:
        """Metrics of one system's structures (``structures[i]`` answers ``requests[i]``)."""

    def reference_rows(self, items: Sequence[Item], ctx: TaskContext) -> list[ResultRow]:
        """Model-free reference rows that need no system (none by default)."""
        return []


# --------------------------------------------------------------------------- loading helpers
def require_file(path: Path, hint: str = "") -> Path:
    """``path`` if it is a file, else ``DataMissing`` naming it."""
    if not path.is_file():
        raise DataMissing(f"data not found: {path}" + (f" ({hint})" if hint else ""))
    return path


def read_jsonl(path: Path, problems: list[str]) -> Iterator[tuple[int, Any]]:
    """(line number, object) per readable line; unreadable lines go to ``problems``."""
    with path.open(encoding="utf-8", errors="replace") as fh:
        for n, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                yield n, json.loads(line)
            except json.JSONDecodeError as exc:
                problems.append(f"{path}:{n}: invalid JSON ({exc.msg}, column {exc.colno})")


M = TypeVar("M", bound=BaseModel)


def validate_row(model: type[M], obj: Any, where: str, problems: list[str]) -> M | None:
    """``model.model_validate(obj)``, or None with one ``where: field: message`` problem."""
    if not isinstance(obj, dict):
        problems.append(f"{where}: expected a JSON object, got {type(obj).__name__}")
        return None
    try:
        return model.model_validate(obj)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = ".".join(str(p) for p in err.get("loc", ())) or "(row)"
        msg = "is missing" if err.get("type") == "missing" else err.get("msg", "invalid")
        problems.append(f"{where}: field '{loc}': {msg.removeprefix('Value error, ')}")
        return None


def take(items: list[Item], limit: int | None) -> list[Item]:
    """The first ``limit`` items (all when limit is None)."""
    return items if limit is None else items[: max(0, limit)]


def interleave(groups: Sequence[Sequence[Item]]) -> list[Item]:
    """Round-robin over groups, so a ``--limit`` sample covers every group.

    >>> interleave([[1, 2, 3], ["a"], [10, 20]])
    [1, 'a', 10, 2, 20, 3]
    """
    out: list[Item] = []
    longest = max((len(g) for g in groups), default=0)
    for k in range(longest):
        for g in groups:
            if k < len(g):
                out.append(g[k])
    return out


def one_line(text: str) -> str:
    """Whitespace runs (line breaks included) collapsed to one space: delimiters removed."""
    return " ".join(text.split())
