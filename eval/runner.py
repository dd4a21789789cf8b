"""Run tasks x systems (x judges) and collect one report; no argument parsing, no printing.

Why a separate runner: the CLI, tests and notebooks call the same ``run(config)``; it returns
pydantic objects (``EvalReport``: deterministic metrics; ``RunStats``: timings and cache
counts, which vary between runs) and ``eval.report.write_outputs`` puts them on disk.
Keeping the two apart is what makes ``metrics.json`` identical across runs with the same seed.

Order of work: each task is loaded once; each system's backend is built once (a model loads
once for all tasks; its ``max_new_tokens`` is set per task, which is part of the cache key);
each (task, system) decomposes everything it needs through the persistent cache in one
batched pass, then scores with every judge. A model or judge failure is recorded as an
error (exit code 1) and that system is skipped from then on — never turned into numbers.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from eval.cache import CachedDecomposer, DecompositionCache
from eval.systems import SystemOptions, SystemUnavailable, build_backend, get_system
from eval.tasks import TASKS, DataMissing, ResultRow, TaskContext, get_task
from gsrm.structure import Structure

SCHEMA = "gsrm-eval/1"
DEFAULT_JUDGES = ("lexical", "embedding")
#: model decompositions per cache chunk, in generation batches: the backend decodes a chunk with
#: continuous batching, which only refills the batch (and beats a static batch) when a chunk
#: holds more rows than a batch; the cache is appended once per chunk (what a crash can lose)
CHUNK_BATCHES = 8


class RunConfig(BaseModel):
    """Everything that decides a run's results (stored in ``metrics.json``)."""

    tasks: list[str] = Field(default_factory=lambda: list(TASKS))
    systems: list[str] = Field(default_factory=lambda: ["newline", "paragraph", "sentences",
                                                        "cue-sentences", "segmenter",
                                                        "smollm2-fewshot", "gsrm-ft"])
    judges: list[str] = Field(default_factory=lambda: list(DEFAULT_JUDGES))
    limit: int | None = Field(None, description="at most this many items per task")
    seed: int = 0
    data: str = ""
    out: str = "eval-out"
    cache: str | None = Field(None, description="decomposition cache file (default: OUT/...)")
    annotated: str | None = None
    split: str = Field("test", description="test (report) or dev (choose); see eval.splits")
    schoenfeld: str | None = Field(None, description="Schoenfeld_Reasoning checkout")
    char_tolerance: int = 10
    sent_tolerance: int = 0
    judge_url: str | None = None
    judge_model: str = "default"
    max_new_tokens: int | None = Field(None, description="override every task's budget")
    system_options: SystemOptions = Field(default_factory=SystemOptions)


class TaskReport(BaseModel):
    """One task's table: rows per system (and judge), with what was skipped and why."""

    name: str
    kind: str
    description: str
    n_items: int = 0
    available: int = 0
    bad_lines: list[str] = Field(default_factory=list)
    rows: list[ResultRow] = Field(default_factory=list)
    skipped_systems: dict[str, str] = Field(default_factory=dict)
    max_new_tokens: int | None = None


class EvalReport(BaseModel):
    """The deterministic result of a run (``metrics.json``)."""

    schema_version: str = SCHEMA
    config: RunConfig
    tasks: dict[str, TaskReport] = Field(default_factory=dict)
    skipped_tasks: dict[str, str] = Field(default_factory=dict)
    skipped_systems: dict[str, str] = Field(default_factory=dict)
    skipped_judges: dict[str, str] = Field(default_factory=dict)
    errors: list[str] = Field(default_factory=list)


class JobStats(BaseModel):
    task: str
    system: str
    seconds: float
    decomposed: int = 0
    cache_hits: int = 0


class RunStats(BaseModel):
    """What varies between runs: timings and cache use (``timing.json``)."""

    total_seconds: float = 0.0
    load_seconds: dict[str, float] = Field(default_factory=dict)
    jobs: list[JobStats] = Field(default_factory=list)
    prefetch: list[JobStats] = Field(
        default_factory=list,
        description="model decoding done up front, per group of tasks sharing a token budget")
    cache_file: str = ""
    cache_problems: list[str] = Field(default_factory=list)


class UsageError(ValueError):
    """Bad names or files from the user (the CLI exits with 2)."""


def validate(cfg: RunConfig) -> None:
    """Raise ``UsageError`` for unknown task, system or judge names (before any work)."""
    from gsrm.judges import JUDGES

    try:
        for name in cfg.tasks:
            get_task(name)
        for name in cfg.systems:
            get_system(name)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    unknown = [j for j in cfg.judges if j not in JUDGES]
    if unknown:
        raise UsageError(f"unknown judge(s) {unknown}; choose from {sorted(JUDGES)}")
    if cfg.limit is not None and cfg.limit < 1:
        raise UsageError("--limit must be at least 1")


def _round(value: Any) -> Any:
    if isinstance(value, float):
        return round(value, 6)
    return value


def generation_metrics(structures: list[Structure]) -> tuple[dict[str, float], list[str]]:
    """Shares of empty decompositions and of generations cut at max_new_tokens, with notes."""
    n = max(1, len(structures))
    empty = sum(s.n_steps == 0 for s in structures)
    cut = sum(bool(s.generation and s.generation.hit_max_new_tokens) for s in structures)
    looped = sum(bool(s.generation and s.generation.stopped_in_loop) for s in structures)
    trunc_in = sum(bool(s.generation and s.generation.input_truncated) for s in structures)
    notes = []
    if empty:
        notes.append(f"{empty}/{len(structures)} decompositions had no steps")
    if cut:
        notes.append(f"{cut}/{len(structures)} generations stopped at max_new_tokens")
    if looped:
        notes.append(f"{looped}/{len(structures)} generations stopped at a repeated step")
    if trunc_in:
        notes.append(f"{trunc_in}/{len(structures)} inputs were truncated")
    return {"no_steps": empty / n, "hit_max_tokens": cut / n}, notes


def build_judges(cfg: RunConfig, report: EvalReport) -> dict[str, Any]:
    """Judges by name; ``llm`` without ``judge_url`` is skipped with a note."""
    from gsrm.judges import get_judge

    judges: dict[str, Any] = {}
    for name in cfg.judges:
        if name == "llm":
            if not cfg.judge_url:
                report.skipped_judges[name] = "no endpoint given (--judge-url URL)"
                continue
            judges[name] = get_judge("llm", base_url=cfg.judge_url, model=cfg.judge_model)
        else:
            judges[name] = get_judge(name)
    return judges


def _prefetch(sname: str, backend: Any, tasks: dict[str, Any], loaded: dict[str, Any],
              cfg: RunConfig, ctx: TaskContext, cache: DecompositionCache, report: EvalReport,
              stats: RunStats, failed: set[str], progress: bool) -> None:
    """Decode every task's traces for one model system up front, tasks with the same budget together.

    Why: continuous batching keeps the batch full only while rows are waiting; decoded task by
    task, each task ends with a tail where a few long rows run alone. Pooling the tasks that
    share a token budget (the budget is part of the cache key) leaves one tail per budget.
    The per-task jobs then read everything from the cache. A failure is recorded like a job's.
    """
    from gsrm.backends import BackendError
    from gsrm.model import GSRM
    from gsrm.weights import WeightsNotFoundError

    groups: dict[int, list[tuple[str, str]]] = {}
    names: dict[int, list[str]] = {}
    for tname, task in tasks.items():
        if loaded[tname].items:
            budget = cfg.max_new_tokens or task.max_new_tokens
            groups.setdefault(budget, []).extend(task.requests(loaded[tname].items, ctx))
            names.setdefault(budget, []).append(tname)
    for budget, requests in groups.items():
        # each group on a fresh engine: a task's figures do not hang on what ran before it in
        # this process (the prefix cache; the OpenVINO fault that needed an earlier call's
        # state, eval/README.md "engine fault"); a model load each, none before the first
        backend.reset()
        backend.max_new_tokens = budget
        label = "+".join(names[budget])
        decomposer = CachedDecomposer(GSRM(backend=backend), cache,
                                      chunk_size=CHUNK_BATCHES * cfg.system_options.batch_size,
                                      progress=progress, desc=f"{label}/{sname}")
        t0 = time.perf_counter()
        try:
            decomposer(requests)
        except (BackendError, WeightsNotFoundError) as exc:
            report.errors.append(f"{label} / {sname}: {type(exc).__name__}: {exc}")
            failed.add(sname)
            for tname in names[budget]:
                report.tasks[tname].skipped_systems[sname] = f"failed: {exc}"
            return
        stats.prefetch.append(JobStats(task=label, system=sname,
                                       seconds=round(time.perf_counter() - t0, 3),
                                       decomposed=decomposer.stats["generated"],
                                       cache_hits=decomposer.stats["hits"]))


def run(cfg: RunConfig, progress: bool = False,
        details_sink: list[dict[str, Any]] | None = None) -> tuple[EvalReport, RunStats]:
    """Evaluate every task with every system; see the module docstring."""
    from gsrm.backends import BackendError
    from gsrm.judges import JudgeError
    from gsrm.model import GSRM
    from gsrm.weights import WeightsNotFoundError

    t_start = time.perf_counter()
    validate(cfg)  # unknown names fail before any work
    report = EvalReport(config=cfg)
    stats = RunStats()
    ctx = TaskContext(
        data_root=Path(cfg.data) if cfg.data else TaskContext().data_root,
        limit=cfg.limit, seed=cfg.seed, char_tolerance=cfg.char_tolerance,
        sent_tolerance=cfg.sent_tolerance,
        annotated=Path(cfg.annotated) if cfg.annotated else None,
        split=cfg.split, schoenfeld=Path(cfg.schoenfeld) if cfg.schoenfeld else None,
    )
    cache_path = Path(cfg.cache) if cfg.cache else Path(cfg.out) / "decompositions.jsonl"
    cache = DecompositionCache(cache_path)
    stats.cache_file = str(cache_path)
    stats.cache_problems = list(cache.problems)

    # ---- tasks
    loaded: dict[str, Any] = {}
    tasks = {}
    for name in cfg.tasks:
        task = get_task(name)
        t0 = time.perf_counter()
        try:
            data = task.load(ctx)
        except DataMissing as exc:
            report.skipped_tasks[name] = str(exc)
            continue
        stats.load_seconds[name] = round(time.perf_counter() - t0, 3)
        tasks[name], loaded[name] = task, data
        budget = cfg.max_new_tokens or task.max_new_tokens
        report.tasks[name] = TaskReport(
            name=name, kind=task.kind, description=task.description,
            n_items=len(data.items), available=data.available, bad_lines=data.problems,
            max_new_tokens=budget,
        )

    # ---- judges (only reward tasks need them)
    judges: dict[str, Any] = {}
    if any(t.kind == "reward" for t in tasks.values()):
        judges = build_judges(cfg, report)

    # ---- systems
    backends: dict[str, Any] = {}
    for name in cfg.systems:
        try:
            backends[name] = build_backend(name, cfg.system_options)
        except SystemUnavailable as exc:
            report.skipped_systems[name] = str(exc)
            for tr in report.tasks.values():
                tr.skipped_systems[name] = str(exc)

    from tqdm.auto import tqdm

    failed: set[str] = set()
    for sname, backend in backends.items():
        if get_system(sname).kind == "lm":
            _prefetch(sname, backend, tasks, loaded, cfg, ctx, cache, report, stats, failed,
                      progress)
    jobs = [(t, s) for t in tasks for s in backends]
    for tname, sname in tqdm(jobs, desc="eval", unit="job", disable=not progress):
        task, data, tr = tasks[tname], loaded[tname], report.tasks[tname]
        if sname in failed:
            tr.skipped_systems[sname] = "failed earlier in this run (see errors)"
            continue
        if not data.items:
            continue
        backend = backends[sname]
        spec = get_system(sname)
        if spec.kind == "lm":  # part of the backend identity, hence of the cache key
            backend.max_new_tokens = cfg.max_new_tokens or task.max_new_tokens
        gsrm = GSRM(backend=backend)
        # rule baselines are instant: only model decompositions are worth persisting (and
        # ``_prefetch`` has already put every one of them in the cache)
        lm = spec.kind == "lm"
        decomposer = CachedDecomposer(gsrm, cache if lm else None,
                                      chunk_size=CHUNK_BATCHES * cfg.system_options.batch_size if lm else 512,
                                      progress=progress and lm, desc=f"{tname}/{sname}")
        t0 = time.perf_counter()
        try:
            structures = decomposer(task.requests(data.items, ctx))
            out = task.evaluate(data.items, structures, sname, judges, ctx)
        except (BackendError, JudgeError, WeightsNotFoundError) as exc:
            report.errors.append(f"{tname} / {sname}: {type(exc).__name__}: {exc}")
            failed.add(sname)
            tr.skipped_systems[sname] = f"failed: {exc}"
            continue
        gen_metrics, gen_notes = generation_metrics(structures)
        for row in out.rows:
            row.metrics.update(gen_metrics)
            row.notes.extend(gen_notes)
            row.metrics = {k: _round(v) for k, v in row.metrics.items()}
            if row.distributions:
                row.distributions = {k: [round(x, 6) for x in v]
                                     for k, v in row.distributions.items()}
        tr.rows.extend(out.rows)
        if details_sink is not None:
            details_sink.extend({"task": tname, "system": sname, **d} for d in out.details)
        stats.jobs.append(JobStats(task=tname, system=sname,
                                   seconds=round(time.perf_counter() - t0, 3),
                                   decomposed=decomposer.stats["generated"],
                                   cache_hits=decomposer.stats["hits"]))

    for tname, task in tasks.items():
        refs = task.reference_rows(loaded[tname].items, ctx)
        for row in refs:
            row.metrics = {k: _round(v) for k, v in row.metrics.items()}
        report.tasks[tname].rows.extend(refs)
    stats.total_seconds = round(time.perf_counter() - t_start, 3)
    return report, stats

