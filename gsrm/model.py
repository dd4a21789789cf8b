"""The GSRM: decompose reasoning into steps (cached) and score students against teachers.

Why a cache keyed by content: in GRPO every prompt has G students sharing one teacher, and the
teacher's trace is the same on every call; the released RLKD code re-decomposed it each time.
Here a decomposition is keyed by sha256(backend identity, problem, reasoning), kept in an LRU,
and a batch asks the backend only for the distinct texts it has not seen.

The LM and the judge load lazily: scoring pre-structured steps never loads the LM.

Example::

    >>> from gsrm.model import GSRM
    >>> from gsrm.structure import Step
    >>> g = GSRM.from_names(backend="sentences", judge="lexical")
    >>> t = [Step(meta="Find eggs sold first.", subproblem="How many eggs are sold?", answer="9")]
    >>> g.score("Janet...", t, t).reward
    1.0
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Any

from gsrm.align import SCORE_MODES, score_structures
from gsrm.backends import BACKENDS, Backend, BackendError, get_backend
from gsrm.judges import Judge, get_judge
from gsrm.parse import parse_structure
from gsrm.readonly import DESCRIBE_STEPS
from gsrm.segment import Segmenter, get_segmenter
from gsrm.structure import ScoreMode, ScoreResult, Step, Structure
from gsrm.validation import EMPTY_REASONING, check_teacher, strip_think

__all__ = ["GSRM", "Side", "as_structure", "empty_structure", "strip_think"]

DECOMPOSERS: tuple[str, ...] = ("two-stage", "single-pass")
"""``two-stage``: segment the trace into step spans, then describe each span with the LM (the
default); ``single-pass``: the LM writes the whole decomposition (for large GSRMs behind
vLLM/openai), and its steps get spans by alignment (``gsrm.projection.assign_spans``)."""

#: a side of a comparison: raw reasoning text, a Structure, or a list of steps (dicts or Steps)
Side = str | Structure | Sequence[Step] | Sequence[Mapping[str, Any]]


def empty_structure() -> Structure:
    """The decomposition of a text with no reasoning: no steps, and a warning saying so."""
    return Structure(warnings=[EMPTY_REASONING])


def as_structure(side: Side) -> Structure | None:
    """A Structure for pre-decomposed input, or None for raw text (which needs the GSRM)."""
    if isinstance(side, str):
        return None
    if isinstance(side, Structure):
        return side
    return Structure(steps=[s if isinstance(s, Step) else Step.model_validate(s) for s in side])


class GSRM:
    """Generative Structure Reward Model: a decomposition backend plus a step judge."""

    def __init__(
        self,
        backend: Backend | None = None,
        judge: Judge | None = None,
        mode: ScoreMode = "paper",
        use_coverage: bool = False,
        cache_size: int = 4096,
        decomposer: str = "two-stage",
        segmenter: Segmenter | None = None,
        describe_max_new_tokens: int | None = None,
        describe_steps: str = "all",
    ) -> None:
        if mode not in SCORE_MODES:
            raise ValueError(f"unknown score mode {mode!r}; choose one of {SCORE_MODES}")
        if decomposer not in DECOMPOSERS:
            raise ValueError(f"unknown decomposer {decomposer!r}; choose one of {DECOMPOSERS}")
        if describe_steps not in DESCRIBE_STEPS:
            raise ValueError(f"unknown describe_steps {describe_steps!r}; choose one of "
                             f"{DESCRIBE_STEPS}")
        self.decomposer = decomposer
        self.describe_steps = describe_steps
        self._segmenter = segmenter
        self._describe_max_new_tokens = describe_max_new_tokens
        self._backend = backend
        self._judge = judge
        self.mode: ScoreMode = mode
        self.use_coverage = use_coverage
        self.cache_size = cache_size
        self._cache: OrderedDict[str, Structure] = OrderedDict()
        self._lock = threading.Lock()
        self.stats = {"decompositions": 0, "cache_hits": 0}

    @classmethod
    def from_names(
        cls,
        backend: str | None = None,
        judge: str = "embedding",
        backend_kwargs: Mapping[str, Any] | None = None,
        judge_kwargs: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> GSRM:
        """Build from registry names (see ``gsrm.backends.BACKENDS`` and ``gsrm.judges.JUDGES``).

        With ``decomposer="single-pass"`` an unset (``"auto"``) adapter is the one trained to
        write whole decompositions (``gsrm.weights.adapter_for``).
        """
        bkw = dict(backend_kwargs or {})
        if backend is None:
            from gsrm.backends import default_backend

            backend = default_backend(bkw.get("device"))
        if getattr(BACKENDS.get(backend), "takes_adapter", False):
            from gsrm.weights import adapter_for

            bkw["adapter"] = adapter_for(bkw.get("adapter", "auto"),
                                         kwargs.get("decomposer", "two-stage"))
        return cls(
            backend=get_backend(backend, **bkw),
            judge=get_judge(judge, **dict(judge_kwargs or {})),
            **kwargs,
        )

    @property
    def backend(self) -> Backend:
        if self._backend is None:
            self._backend = get_backend()
        return self._backend

    @property
    def describe_max_new_tokens(self) -> int:
        """The describer's budget per span: as given, else its span format's
        (``gsrm.spanformat.SpanFormat.max_new_tokens``: 128 for the default ``qa`` describer,
        192 for the three-line formats), so each describer gets the budget it was checked
        with."""
        from gsrm.spanformat import get_span_format

        return get_span_format(self.backend.span_format).budget(self._describe_max_new_tokens)

    @property
    def segmenter(self) -> Segmenter:
        if self._segmenter is None:
            self._segmenter = get_segmenter()
        return self._segmenter

    @property
    def two_stage(self) -> bool:
        """Segment-then-describe: the default for LM backends (``Backend.describes_spans``)."""
        return self.decomposer == "two-stage" and self.backend.describes_spans

    @property
    def reads_only(self) -> bool:
        """Whether ``describe_steps="read"`` can leave steps out: two-stage, with a describer
        that sees one span at a time. One whose prompt shows the previous span (``tags-prev``)
        would see another prompt for the first span of the second round, so it describes
        every step."""
        from gsrm.spanformat import get_span_format

        return self.two_stage and not get_span_format(self.backend.span_format).previous

    def decomposer_identity(self) -> str:
        """What besides the backend decides a decomposition (part of the cache key)."""
        import json

        if not self.two_stage:
            return "single-pass"
        from gsrm.describe import (
            DESCRIBE_STOP,
            REPAIR_AT_BUDGET,
            REPAIR_CUT_HEADER,
            REPAIR_MAX_NEW_TOKENS,
            REPAIR_ROUNDS,
            RETRY_ROUNDS,
        )
        from gsrm.plans import PLAN_RULE_VERSION
        from gsrm.spanformat import get_span_format

        derived = get_span_format(self.backend.span_format).derives_meta
        return json.dumps({"decomposer": "two-stage", "segmenter": self.segmenter.identity(),
                           "describe_max_new_tokens": self.describe_max_new_tokens,
                           "describe_stop": list(DESCRIBE_STOP),
                           "describe_repair": [REPAIR_ROUNDS, REPAIR_MAX_NEW_TOKENS,
                                               REPAIR_AT_BUDGET, REPAIR_CUT_HEADER],
                           "describe_retry": RETRY_ROUNDS,
                           # plans derived from the questions: the rule is part of the output
                           **({"plan_rule": PLAN_RULE_VERSION} if derived else {})},
                          sort_keys=True)

    @property
    def judge(self) -> Judge:
        if self._judge is None:
            self._judge = get_judge()
        return self._judge

    # ------------------------------------------------------------------ decomposition
    def cache_key(self, problem: str, reasoning: str) -> str:
        """sha256 over length-prefixed parts (backend identity, problem, reasoning).

        Length prefixes, not separators: with parts joined by ``\\0`` the items
        ``("Q\\0", "T")`` and ``("Q", "\\0T")`` hashed the same bytes and shared a
        decomposition.
        """
        h = hashlib.sha256()
        for part in (self.backend.cache_key(), self.decomposer_identity(), problem, reasoning):
            data = part.encode("utf-8", "surrogatepass")
            h.update(len(data).to_bytes(8, "big"))
            h.update(data)
        return h.hexdigest()

    def decompose(self, problem: str, reasoning: str) -> Structure:
        """Decompose one reasoning trace (text before ``</think>``) into a Structure."""
        return self.decompose_many([(problem, reasoning)])[0]

    def decompose_many(self, items: Sequence[tuple[str, str]]) -> list[Structure]:
        """Decompose many traces; distinct uncached texts go to the backend as one batch.

        The empty-text rule (DESIGN.md section 1): a text with no reasoning (blank, or only
        think tags) gets ``empty_structure()`` without a model call; a model given nothing
        invents steps.
        """
        cleaned = [(p, strip_think(r)) for p, r in items]
        if not all(r for _, r in cleaned):
            live = [k for k, (_, r) in enumerate(cleaned) if r]
            decs = iter(self.decompose_many([cleaned[k] for k in live]) if live else [])
            return [next(decs) if r else empty_structure() for _, r in cleaned]
        keys = [self.cache_key(p, r) for p, r in cleaned]
        results: dict[str, Structure] = {}
        todo: dict[str, tuple[str, str]] = {}
        served: list[Structure | None] = []  # a copy per item served from the cache
        for key, item in zip(keys, cleaned):
            hit = None if key in todo else self._cached(key)
            served.append(hit)
            if hit is None:
                todo.setdefault(key, item)
        if todo:
            todo_keys = list(todo)
            structs = self._decompose_uncached([todo[k] for k in todo_keys])
            if len(structs) != len(todo_keys):
                raise BackendError(f"backend {self.backend.name!r} returned {len(structs)} "
                                   f"decompositions for {len(todo_keys)} texts")
            with self._lock:
                for key, struct in zip(todo_keys, structs, strict=True):
                    results[key] = struct
                    self._cache[key] = struct
                    self.stats["decompositions"] += 1
                while len(self._cache) > self.cache_size:
                    self._cache.popitem(last=False)
        return [hit if hit is not None else results[key] for hit, key in zip(served, keys)]

    def _decompose_uncached(self, items: Sequence[tuple[str, str]]) -> list[Structure]:
        """Decompose traces with no cache: two-stage (segment, then describe each span) or the
        backend's own whole-trace decomposition, whose steps get spans by alignment."""
        if self.two_stage:
            from gsrm.describe import decompose_two_stage

            return decompose_two_stage(self.segmenter, self.backend, items,
                                       self.describe_max_new_tokens)
        from gsrm.projection import assign_spans

        gens = self.backend.decompose_many(items)
        if len(gens) != len(items):
            raise BackendError(f"backend {self.backend.name!r} returned {len(gens)} "
                               f"decompositions for {len(items)} texts")
        out: list[Structure] = []
        for (_, reasoning), gen in zip(items, gens, strict=True):
            struct = parse_structure(gen.text)
            struct.generation = gen.model_copy(update={
                "text": "", "spans": None, "backend": self.backend.name,
                "model": self.backend.model_id})
            if gen.input_truncated:
                struct.warnings.append("input reasoning was truncated to max_input_tokens")
            if gen.hit_max_new_tokens:
                struct.warnings.append("generation stopped at max_new_tokens")
            if gen.stopped_in_loop:
                struct.warnings.append("generation stopped at a step repeating an earlier one "
                                       "(dropped)")
            if gen.spans is not None and len(gen.spans) == len(struct.steps):
                for st, span in zip(struct.steps, gen.spans, strict=True):
                    st.span = span
            else:
                struct = assign_spans(struct, reasoning)
            out.append(struct)
        return out

    # ------------------------------------------------------------------ scoring
    def resolve(self, items: Sequence[tuple[str, Side]]) -> list[Structure]:
        """Structures for (problem, side) items, in order, decomposing raw text in one batch.

        Exactly one Structure per item, at the item's position, or an error: a short answer
        from the decomposition can never shift the sides onto other items.
        """
        out: list[Structure | None] = [as_structure(side) for _, side in items]
        raw_idx = [i for i, s in enumerate(out) if s is None]
        if raw_idx:
            decs = self.decompose_many([(items[i][0], str(items[i][1])) for i in raw_idx])
            if len(decs) != len(raw_idx):
                raise BackendError(f"{len(decs)} decompositions for {len(raw_idx)} texts")
            for i, d in zip(raw_idx, decs, strict=True):
                out[i] = d
        resolved = [s for s in out if s is not None]
        if len(resolved) != len(items):  # pragma: no cover - guarded by the checks above
            raise RuntimeError(f"resolved {len(resolved)} sides for {len(items)} items")
        return resolved

    def score(self, problem: str, teacher: Side, student: Side) -> ScoreResult:
        """Score one student against one teacher (either may be text or steps)."""
        return self.score_many([(problem, teacher, student)])[0]

    def score_many(self, items: Sequence[tuple[str, Side, Side]]) -> list[ScoreResult]:
        """Score (problem, teacher, student) triples with one backend batch and batched judging.

        A teacher with no reasoning or no steps raises ValueError (there is nothing to
        distil: bad input, never a reward); a student with none is a scored 0 with a warning.
        """
        for i, (_, teacher, _) in enumerate(items):
            check_teacher(teacher, f"item {i}: teacher")
        if self.describe_steps == "read" and self.reads_only:
            return self._score_reading(items)
        structs = self.resolve([(p, side) for p, t, s in items for side in (t, s)])
        teachers, students = structs[0::2], structs[1::2]
        pairs = list(zip(teachers, students, strict=True))
        if len(pairs) != len(items):  # pragma: no cover - resolve returns one per side
            raise RuntimeError(f"{len(pairs)} pairs for {len(items)} items")
        return score_structures(pairs, self.judge, self.mode, self.use_coverage)

    def _score_reading(self, items: Sequence[tuple[str, Side, Side]]) -> list[ScoreResult]:
        """``score_many`` describing only the student steps the reward reads
        (``gsrm.readonly``): teachers are decomposed whole (and cached), a student whose whole
        decomposition is cached uses it, the others are described in two rounds and not
        cached (a structure with steps left out is not a decomposition)."""
        from gsrm.readonly import read_students

        teachers = self.resolve([(p, t) for p, t, _ in items])
        students: list[Structure | None] = [as_structure(s) for _, _, s in items]
        todo: dict[int, str] = {}  # item -> its student's reasoning, think tags stripped
        for i, st in enumerate(students):
            if st is not None:
                continue
            problem, text = items[i][0], strip_think(str(items[i][2]))
            if not text:
                students[i] = empty_structure()
            elif (hit := self._cached(self.cache_key(problem, text))) is not None:
                students[i] = hit
            else:
                todo[i] = text
        if todo:
            read = read_students(self.backend, self.judge, self.segmenter,
                                 [teachers[i] for i in todo],
                                 [(items[i][0], text) for i, text in todo.items()],
                                 self.describe_max_new_tokens, self.mode, self.use_coverage)
            with self._lock:
                self.stats["decompositions"] += len(todo)
            for i, st in zip(todo, read, strict=True):
                students[i] = st
        pairs = [(t, s) for t, s in zip(teachers, students, strict=True) if s is not None]
        if len(pairs) != len(items):  # pragma: no cover - every student is set above
            raise RuntimeError(f"{len(pairs)} pairs for {len(items)} items")
        return score_structures(pairs, self.judge, self.mode, self.use_coverage)

    def _cached(self, key: str) -> Structure | None:
        """A copy of the cached decomposition under ``key``, marked cached, or None (a copy:
        saying it was cached must not mutate the cached one)."""
        with self._lock:
            hit = self._cache.get(key)
            if hit is None:
                return None
            self._cache.move_to_end(key)
            self.stats["cache_hits"] += 1
        out = hit.model_copy(deep=True)
        if out.generation is not None:
            out.generation.cached = True
        return out
