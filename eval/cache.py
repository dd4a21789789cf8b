"""A persistent decomposition cache, so a second run of the same systems generates nothing.

Why on disk: the default GSRM decodes at tens of tokens per second on a CPU, so a run of every
task takes minutes; rerunning it to add a judge, a metric or a plot must not decode again.
The in-memory LRU of ``gsrm.model.GSRM`` does not survive the process; this file does.

Format: JSON Lines, one ``{"key": ..., "structure": {...}}`` object a line, where ``key`` is
``GSRM.cache_key(problem, strip_think(reasoning))`` — the same content hash the GSRM uses,
which covers the backend's identity (name, model, adapter, max_new_tokens, max_input_tokens,
shots), so a changed setting never reads a stale entry. Records are only appended: each batch
is one ``os.write`` on a file opened with ``O_APPEND`` (concurrent writers do not interleave
lines), followed by ``fsync``. A torn last line left by a crash is skipped on load and
reported, and the next append starts on a fresh line; on duplicate keys the last record wins.

Example::

    >>> import tempfile, pathlib
    >>> from gsrm.model import GSRM
    >>> from gsrm.backends import get_backend
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "cache.jsonl"
    >>> d = CachedDecomposer(GSRM(backend=get_backend("sentences")), DecompositionCache(path))
    >>> d([("p", "Add 2. Then 3.")])[0].n_steps, d.stats
    (2, {'hits': 0, 'generated': 1})
    >>> d2 = CachedDecomposer(GSRM(backend=get_backend("sentences")), DecompositionCache(path))
    >>> d2([("p", "Add 2. Then 3.")])[0].n_steps, d2.stats
    (2, {'hits': 1, 'generated': 0})
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Sequence
from pathlib import Path

from pydantic import ValidationError

from gsrm.model import GSRM, strip_think
from gsrm.structure import Structure


class DecompositionCache:
    """Structures by content key, loaded from and appended to one JSONL file."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.problems: list[str] = []  # lines that could not be read, for the report
        self._data: dict[str, Structure] = {}
        self._lock = threading.Lock()
        if self.path.exists():
            self._load()

    def _load(self) -> None:
        with self.path.open(encoding="utf-8", errors="replace") as fh:
            for n, line in enumerate(fh, start=1):
                if not line.strip():
                    continue
                try:
                    rec = json.loads(line)
                    self._data[str(rec["key"])] = Structure.model_validate(rec["structure"])
                except (json.JSONDecodeError, KeyError, TypeError, ValidationError) as exc:
                    self.problems.append(f"{self.path}:{n}: unreadable cache record "
                                         f"({type(exc).__name__}); skipped")

    def __len__(self) -> int:
        return len(self._data)

    def __contains__(self, key: str) -> bool:
        return key in self._data

    def get(self, key: str) -> Structure | None:
        """A deep copy of the cached structure (callers may mutate it), or None."""
        hit = self._data.get(key)
        return hit.model_copy(deep=True) if hit is not None else None

    def _ends_torn(self) -> bool:
        """True if the file's last byte is not a newline (a crash cut the last record)."""
        try:
            with self.path.open("rb") as fh:
                fh.seek(0, os.SEEK_END)
                if fh.tell() == 0:
                    return False
                fh.seek(-1, os.SEEK_END)
                return fh.read(1) != b"\n"
        except FileNotFoundError:
            return False

    def put_many(self, records: Sequence[tuple[str, Structure]]) -> None:
        """Store and append records: one write of whole lines, then fsync."""
        if not records:
            return
        blob = "".join(
            json.dumps({"key": k, "structure": s.model_dump(mode="json")}, ensure_ascii=False)
            + "\n"
            for k, s in records
        ).encode("utf-8")
        with self._lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            if self._ends_torn():
                blob = b"\n" + blob  # close a torn line so this batch starts whole
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                view = memoryview(blob)
                while view:  # a regular file takes it in one write; loop only for safety
                    view = view[os.write(fd, view):]
                os.fsync(fd)
            finally:
                os.close(fd)
            for k, s in records:
                self._data[k] = s.model_copy(deep=True)


class CachedDecomposer:
    """``GSRM.decompose_many`` behind the persistent cache, in length-sorted chunks.

    Misses are sorted by trace length and sent in chunks of ``chunk_size`` (similar lengths, so
    little padding; the runner makes a chunk several generation batches, which the backend
    decodes with continuous batching), and each chunk is appended to the cache as soon as it
    is done, so an interrupted run keeps its progress. ``progress`` shows a tqdm bar.
    """

    def __init__(self, gsrm: GSRM, cache: DecompositionCache | None = None,
                 chunk_size: int = 8, progress: bool = False, desc: str = "decompose") -> None:
        self.gsrm = gsrm
        self.cache = cache
        self.chunk_size = max(1, chunk_size)
        self.progress = progress
        self.desc = desc
        self.stats = {"hits": 0, "generated": 0}

    def key(self, problem: str, reasoning: str) -> str:
        """The cache key the GSRM itself uses for this item."""
        return self.gsrm.cache_key(problem, strip_think(reasoning))

    def __call__(self, items: Sequence[tuple[str, str]]) -> list[Structure]:
        keys = [self.key(p, r) for p, r in items]
        found: dict[str, Structure] = {}
        todo: dict[str, tuple[str, str]] = {}
        for key, item in zip(keys, items):
            if key in found or key in todo:
                continue
            hit = self.cache.get(key) if self.cache is not None else None
            if hit is not None:
                found[key] = hit
                self.stats["hits"] += 1
            else:
                todo[key] = item
        order = sorted(todo, key=lambda k: (len(todo[k][1]), k))
        if order:
            from tqdm.auto import tqdm

            with tqdm(total=len(order), desc=self.desc, unit="trace", leave=False,
                      disable=not self.progress) as bar:
                for start in range(0, len(order), self.chunk_size):
                    chunk = order[start:start + self.chunk_size]
                    structs = self.gsrm.decompose_many([todo[k] for k in chunk])
                    for k, s in zip(chunk, structs):
                        if s.generation is not None:
                            s.generation.cached = False
                        found[k] = s
                    if self.cache is not None:
                        self.cache.put_many(list(zip(chunk, structs)))
                    self.stats["generated"] += len(chunk)
                    bar.update(len(chunk))
        return [found[k].model_copy(deep=True) for k in keys]
