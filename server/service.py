"""The scoring service behind every endpoint: limits, batching, one model thread, outcomes.

Why here and not in the routes: the endpoints only translate wire shapes (``protocol``); this
module owns what they share. It wraps ONE ``gsrm.model.GSRM`` (parsing, caching and the reward
rule all live there; nothing is re-implemented) and runs every model call on a single worker
thread, because the model is not thread-safe. Concurrent requests are merged by the
``DynamicBatcher`` into one ``GSRM.score_many`` call, so G students sharing a teacher, even
across requests, decompose the teacher once (GSRM dedups and caches by content hash).

Failures are errors, never rewards: an exception inside scoring reaches the caller as an
``ApiError`` (5xx), and when a merged batch fails, each request in it is re-run alone so one
bad request cannot fail its neighbours.

Example::

    >>> import asyncio
    >>> from gsrm.model import GSRM
    >>> from server.service import Pair, RewardService
    >>> from server.settings import Settings
    >>> async def main():
    ...     svc = RewardService(Settings(judge="lexical", backend="sentences"),
    ...                         GSRM.from_names(backend="sentences", judge="lexical"))
    ...     await svc.start()
    ...     out = await svc.score_pairs([Pair("2+3?", "Add 2 and 3 = 5.", "Add 2 and 3 = 5.")],
    ...                                 svc.options(None))
    ...     await svc.stop()
    ...     return out[0].reward
    >>> asyncio.run(main())
    1.0
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from gsrm.align import combine
from gsrm.backends import Backend, Generation
from gsrm.flags import result_flags
from gsrm.model import GSRM
from gsrm.prompts import USER_TEMPLATE
from gsrm.structure import ScoreResult, Step
from gsrm.validation import check_unicode
from server.batcher import DynamicBatcher, Job, WorkerThread
from server.errors import (
    BadRequest,
    ChatNotSupported,
    ModelNotFound,
    PayloadTooLarge,
    RequestTimeout,
    ValidationFailed,
    to_api_error,
)
from server.metrics import Metrics
from server.protocol import ChatCompletionRequest, ScoreOptions
from server.settings import Settings

log = logging.getLogger("gsrm.server")


def gsrm_from_settings(settings: Settings) -> GSRM:
    """Build (not load) the GSRM the settings describe; weights load on first use."""
    from gsrm.backends import get_backend
    from gsrm.cli import backend_kwargs, build_parser
    from gsrm.judges import get_judge

    # the CLI's own defaults for every model flag, then ours on top: the server and `gsrm`
    # build backends the same way, whatever flags the CLI grows
    ns = build_parser().parse_args(["decompose"])
    for key, value in {
        "backend": settings.backend, "model": settings.model, "adapter": settings.adapter,
        "base_url": settings.backend_url, "api_key": settings.backend_api_key,
        "span_format": settings.span_format, "max_new_tokens": settings.max_new_tokens,
        "max_input_tokens": settings.max_input_tokens, "shots": settings.shots,
        "batch_size": settings.gen_batch_size, "prompt_lookup": settings.prompt_lookup,
        "device": settings.device, "dtype": settings.dtype, "threads": settings.threads,
        "decomposer": settings.decomposer, "ov_weights": settings.ov_weights,
        "ov_precision": settings.ov_precision, "ov_kv_cache_gb": settings.ov_kv_cache_gb,
        "prefix_warmup": settings.prefix_warmup,
    }.items():
        setattr(ns, key, value)
    bkw = backend_kwargs(ns)
    jkw: dict[str, Any] = {}
    if settings.judge == "llm":
        jkw = {"base_url": settings.judge_url, "model": settings.judge_model,
               "api_key": settings.judge_api_key}
    from gsrm.cli import segmenter_from_arg

    return GSRM(backend=get_backend(ns.backend, **bkw),  # resolved by backend_kwargs
                judge=get_judge(settings.judge, **jkw), mode=settings.mode,
                use_coverage=settings.coverage, cache_size=settings.cache_size,
                describe_steps=settings.describe_steps,
                decomposer=settings.decomposer, segmenter=segmenter_from_arg(settings.segmenter))


# --------------------------------------------------------------------------- data
@dataclass
class Pair:
    """One comparison as received; ``where`` names its fields for error messages."""

    problem: str
    teacher: Any  # str or list[Step]
    student: Any
    where: tuple[str, str, str] = ("problem", "teacher", "student")


@dataclass(frozen=True)
class Options:
    mode: str
    coverage: bool
    truncate: bool
    details: bool


@dataclass
class Outcome:
    """A scored pair: the library's ScoreResult plus what the server did to the input."""

    result: ScoreResult
    reward: float
    mode: str
    truncated: bool = False
    warnings: list[str] = field(default_factory=list)

    @property
    def flags(self) -> list[str]:
        """``gsrm.flags`` names for this pair (``truncated`` also when the server cut it)."""
        return result_flags(self.result, cut=self.truncated)


@dataclass
class ChatWork:
    messages: list[dict[str, str]]
    wrap: bool
    problem: str
    reasoning: str
    max_new_tokens: int


@dataclass
class ChatOutcome:
    generation: Generation
    input_truncated: bool
    prompt_built: bool


def split_user_message(text: str) -> tuple[str, str]:
    """(problem, reasoning) from a user turn in the canonical template, else ("", text).

    >>> split_user_message("Problem:\\n2+3?\\n\\nReasoning to decompose:\\n2+3 = 5.")
    ('2+3?', '2+3 = 5.')
    >>> split_user_message("2+3 = 5.")
    ('', '2+3 = 5.')
    """
    head, sep, _ = USER_TEMPLATE.partition("{problem}")
    mid = USER_TEMPLATE.split("{problem}", 1)[1].split("{reasoning}", 1)[0]
    if sep and text.startswith(head) and mid in text:
        problem, reasoning = text[len(head):].split(mid, 1)
        return problem.strip(), reasoning.strip()
    return "", text


def _check_text(text: str, where: str) -> None:
    """422 for text that is not valid Unicode (``gsrm.validation.check_unicode``)."""
    try:
        check_unicode(text, where)
    except ValueError as exc:
        raise ValidationFailed(str(exc), param=where) from None


# --------------------------------------------------------------------------- the service
class RewardService:
    """One GSRM, one worker thread, one dynamic batcher; shared by all endpoints."""

    def __init__(self, settings: Settings, gsrm: GSRM | None = None,
                 metrics: Metrics | None = None) -> None:
        self.settings = settings
        self.gsrm = gsrm
        self.metrics = metrics or Metrics()
        self.status = "loading"
        self.error: str | None = None
        self.created = int(time.time())
        self._executor: WorkerThread | None = None
        self.batcher: DynamicBatcher | None = None
        self._load: asyncio.Future[Any] | None = None

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        """Build the GSRM (cheap), start the batcher, and load weights in the background."""
        s = self.settings
        if self.gsrm is None:
            self.gsrm = gsrm_from_settings(s)
        self._executor = WorkerThread("gsrm-worker")
        m = self.metrics
        self.batcher = b = DynamicBatcher(
            self._run_batch, self._executor, window_s=s.batch_window_ms / 1000.0,
            max_batch=s.max_batch, max_queue=s.max_queue, retry_after=s.retry_after_s,
            # wait out the window only while more POSTs are in progress than are queued
            expect_more=lambda: m.active_posts > b.open_jobs)
        self.batcher.start()
        self.metrics.watch_queue(lambda: b.queued, lambda: b.in_flight)
        backend = self.gsrm.backend
        self.metrics.watch_engine(lambda: getattr(backend, "resets", 0))
        # the executor is FIFO: requests arriving while loading simply wait behind the load
        self._load = asyncio.get_running_loop().run_in_executor(self._executor, self._warm_up)
        self._load.add_done_callback(self._loaded)

    def _warm_up(self) -> None:
        assert self.gsrm is not None
        if self.settings.threads:
            import torch

            torch.set_num_threads(self.settings.threads)
        load = getattr(self.gsrm.backend, "load", None)
        if callable(load):
            load()
        step = Step(meta="warm up the judge", subproblem="is it loaded?", answer="yes")
        self.gsrm.score_many([("", [step], [step])])  # loads the judge's model, if any

    def _loaded(self, fut: asyncio.Future[Any]) -> None:
        if fut.cancelled() or self.status != "loading":  # e.g. stopped while loading
            return
        exc = fut.exception()
        if exc is None:
            self.status = "ready"
            self.metrics.ready.set(1)
            log.info("gsrm-serve ready: backend=%s judge=%s", self.backend_name, self.judge_name)
        else:
            self.status = "failed"
            self.error = f"{type(exc).__name__}: {exc}"
            log.error("loading the model failed: %s", self.error)

    async def stop(self) -> None:
        """Finish queued work (bounded by the graceful timeout), then release the worker."""
        self.status = "stopping"
        self.metrics.ready.set(0)
        if self.batcher is not None:
            await self.batcher.stop(drain_timeout=self.settings.graceful_timeout_s)
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)

    # ------------------------------------------------------------------ facts
    @property
    def backend_name(self) -> str:
        if self.gsrm is not None:
            return self.gsrm.backend.name
        from gsrm.backends import default_backend

        return self.settings.backend or default_backend(self.settings.device)

    @property
    def judge_name(self) -> str:
        return self.gsrm.judge.name if self.gsrm is not None else self.settings.judge

    @property
    def backend_model(self) -> str:
        return self.gsrm.backend.model_id if self.gsrm is not None else ""

    def health(self) -> dict[str, Any]:
        b = self.batcher
        return {"status": self.status, "model": self.settings.served_model_name,
                "backend": self.backend_name, "judge": self.judge_name,
                "queue_depth": b.queued if b else 0, "in_flight": b.in_flight if b else 0,
                "error": self.error}

    # ------------------------------------------------------------------ request checks
    def check_model(self, name: str | None, param: str = "model") -> None:
        if name is not None and name != self.settings.served_model_name:
            raise ModelNotFound(f"model {name!r} is not served here; this server serves "
                                f"{self.settings.served_model_name!r}", param=param)

    def options(self, opts: ScoreOptions | None) -> Options:
        s = self.settings
        o = opts or ScoreOptions()
        if o.judge is not None and o.judge != self.judge_name:
            raise BadRequest(f"this server scores with the {self.judge_name!r} judge; "
                             f"options.judge={o.judge!r} needs a server started with "
                             f"--judge {o.judge}", param="options.judge", code="unsupported_judge")
        return Options(mode=o.mode or s.mode,
                       coverage=s.coverage if o.coverage is None else o.coverage,
                       truncate=s.truncate if o.truncate is None else o.truncate,
                       details=o.details)

    def check_items(self, n: int, param: str) -> None:
        if n > self.settings.max_items:
            raise PayloadTooLarge(f"{n} items in one request; the limit is "
                                  f"{self.settings.max_items} (max_items): split the request",
                                  param=param, code="too_many_items")

    def _fit_text(self, text: str, where: str, truncate: bool, notes: list[str]) -> str:
        _check_text(text, where)
        limit = self.settings.max_reasoning_chars
        if len(text) > limit:
            if not truncate:
                raise PayloadTooLarge(
                    f"{where} has {len(text)} characters; the limit is {limit} "
                    f"(max_reasoning_chars); send options.truncate=true to cut it",
                    param=where, code="reasoning_too_long")
            notes.append(f"{where}: cut from {len(text)} to {limit} characters by the server")
            return text[:limit]
        return text

    def _fit_steps(self, steps: list[Step], where: str, truncate: bool,
                   notes: list[str]) -> list[Step]:
        s = self.settings  # step parts were checked for valid Unicode by Step itself (422)
        if len(steps) > s.max_steps:
            if not truncate:
                raise PayloadTooLarge(f"{where} has {len(steps)} steps; the limit is "
                                      f"{s.max_steps} (max_steps); send options.truncate=true "
                                      f"to keep the first {s.max_steps}", param=where,
                                      code="too_many_steps")
            notes.append(f"{where}: cut from {len(steps)} to {s.max_steps} steps by the server")
            steps = steps[: s.max_steps]
        total, keep = 0, len(steps)
        for i, st in enumerate(steps):
            total += len(st.meta) + len(st.subproblem) + len(st.answer)
            if total > s.max_reasoning_chars and keep == len(steps):
                keep = i
        if keep < len(steps):
            if not truncate:
                raise PayloadTooLarge(f"{where} has {total} characters in its steps; the limit "
                                      f"is {s.max_reasoning_chars} (max_reasoning_chars); send "
                                      f"options.truncate=true to keep the leading steps that "
                                      f"fit", param=where, code="reasoning_too_long")
            notes.append(f"{where}: cut from {len(steps)} to {keep} steps "
                         f"(max_reasoning_chars) by the server")
            steps = steps[:keep]
        return steps

    def _fit_side(self, side: Any, where: str, truncate: bool, cuts: list[str],
                  notes: list[str]) -> Any:
        # an empty student text is the library's rule (GSRM.decompose_many: no model call, no
        # steps, a warning); an empty teacher never gets here (protocol: 422)
        if isinstance(side, str):
            return self._fit_text(side, where, truncate, cuts)
        return self._fit_steps(list(side), where, truncate, cuts)

    # ------------------------------------------------------------------ scoring
    async def score_pairs(self, pairs: Sequence[Pair], opts: Options) -> list[Outcome]:
        """Score pairs through the batcher; raises ApiError on any failure."""
        triples: list[tuple[str, Any, Any]] = []
        notes: list[tuple[list[str], list[str]]] = []
        for p in pairs:
            cuts: list[str] = []
            info: list[str] = []
            problem = self._fit_text(p.problem, p.where[0], opts.truncate, cuts)
            teacher = self._fit_side(p.teacher, p.where[1], opts.truncate, cuts, info)
            student = self._fit_side(p.student, p.where[2], opts.truncate, cuts, info)
            triples.append((problem, teacher, student))
            notes.append((cuts, info))
        results: list[ScoreResult] = await self._submit("score", triples, len(triples))
        self.metrics.pairs.inc(len(results))
        out = []
        for r, (cuts, info) in zip(results, notes):
            if opts.mode == r.mode and opts.coverage == r.use_coverage:
                reward = r.reward
            else:  # the library's own combination rule, for a per-request mode
                reward = combine(r.step_rewards, r.teacher.n_steps, r.student.n_steps,
                                 opts.mode, opts.coverage)[0]  # type: ignore[arg-type]
            warns = cuts + info
            warns += [f"teacher: {w}" for w in r.teacher.warnings]
            warns += [f"student: {w}" for w in r.student.warnings]
            out.append(Outcome(result=r, reward=reward, mode=opts.mode, truncated=bool(cuts),
                               warnings=warns))
        return out

    async def chat(self, req: ChatCompletionRequest) -> ChatOutcome:
        """Generate the GSRM's reply (the decomposition) for a chat conversation."""
        s = self.settings
        self.check_model(req.model)
        if req.stream:
            raise BadRequest("stream=true is not supported; the reply comes in one piece",
                             param="stream", code="unsupported_parameter")
        if req.n is not None and req.n > 1:
            raise BadRequest("n > 1 is not supported: decoding is greedy, every choice would "
                             "be the same", param="n", code="unsupported_parameter")
        assert self.gsrm is not None
        if self.backend_name == "sentences":
            raise ChatNotSupported("the 'sentences' backend is rule-based and has no chat "
                                   "model; start the server with --backend transformers, "
                                   "openai or vllm to use /v1/chat/completions",
                                   param="model")
        users = [i for i, m in enumerate(req.messages) if m.role == "user"]
        if not users:
            raise BadRequest("messages need at least one user message (the reasoning to "
                             "decompose)", param="messages")
        texts = []
        for i, m in enumerate(req.messages):
            t = m.text
            _check_text(t, f"messages[{i}].content")
            if len(t) > s.max_reasoning_chars:
                raise PayloadTooLarge(f"messages[{i}].content has {len(t)} characters; the "
                                      f"limit is {s.max_reasoning_chars} (max_reasoning_chars)",
                                      param=f"messages[{i}].content",
                                      code="reasoning_too_long")
            texts.append(t)
        wrap = not any(m.role in ("system", "developer") for m in req.messages)
        problem, reasoning = split_user_message(texts[users[-1]]) if wrap else ("", "")
        messages = [{"role": "system" if m.role == "developer" else m.role, "content": t}
                    for m, t in zip(req.messages, texts)]
        limit = req.max_completion_tokens or req.max_tokens or s.max_new_tokens
        work = ChatWork(messages=messages, wrap=wrap, problem=problem, reasoning=reasoning,
                        max_new_tokens=min(limit, s.max_new_tokens))
        return await self._submit("chat", work, 1)

    # ------------------------------------------------------------------ queue + wait
    async def _submit(self, kind: str, payload: Any, size: int) -> Any:
        assert self.batcher is not None
        job = self.batcher.submit(kind, payload, size)
        try:
            return await asyncio.wait_for(asyncio.shield(job.future),
                                          self.settings.request_timeout_s)
        except asyncio.TimeoutError:
            self.batcher.cancel(job)
            raise RequestTimeout(f"the request did not finish within "
                                 f"{self.settings.request_timeout_s:g} s (request_timeout_s)"
                                 ) from None
        except asyncio.CancelledError:  # client went away: drop the work if not started
            self.batcher.cancel(job)
            raise
        except Exception as exc:  # every failure becomes an HTTP error (ApiError)
            err = to_api_error(exc)
            if err.status >= 500 and err is not exc:
                log.error("%s job failed: %s", kind, exc, exc_info=exc)
            raise err from exc

    # ------------------------------------------------------------------ the worker thread
    def _run_batch(self, jobs: Sequence[Job]) -> list[Any]:
        """Runs in the worker thread: one GSRM call per kind for the whole batch."""
        assert self.gsrm is not None
        t0 = time.perf_counter()
        before = dict(self.gsrm.stats)
        outcomes: list[Any] = [None] * len(jobs)
        live = [i for i, j in enumerate(jobs) if not j.future.done()]
        by_kind: dict[str, list[int]] = defaultdict(list)
        for i in live:
            by_kind[jobs[i].kind].append(i)
        for kind, idx in by_kind.items():
            handler = self._score_jobs if kind == "score" else self._chat_jobs
            for i, o in zip(idx, handler([jobs[i] for i in idx])):
                outcomes[i] = o
        m = self.metrics
        m.batch_seconds.observe(time.perf_counter() - t0)
        m.batch_items.observe(sum(jobs[i].size for i in live))
        m.batch_requests.observe(len(live))
        after = self.gsrm.stats
        for counter, key in ((m.decompositions, "decompositions"), (m.cache_hits, "cache_hits")):
            counter.inc(max(0, after.get(key, 0) - before.get(key, 0)))
        return outcomes

    def _score_jobs(self, jobs: Sequence[Job]) -> list[Any]:
        assert self.gsrm is not None
        triples = [t for j in jobs for t in j.payload]
        try:
            results = self.gsrm.score_many(triples)
        except Exception as exc:  # noqa: BLE001 - becomes this batch's outcome
            if len(jobs) == 1:
                return [exc]
            # isolate: one request's failure must not fail the others merged with it
            out: list[Any] = []
            for j in jobs:
                try:
                    out.append(self.gsrm.score_many(j.payload))
                except Exception as e:  # noqa: BLE001
                    out.append(e)
            return out
        out, k = [], 0
        for j in jobs:
            out.append(results[k : k + j.size])
            k += j.size
        return out

    def _chat_prompt(self, backend: Backend, work: ChatWork) -> tuple[list[dict[str, str]], bool]:
        if work.wrap:
            return backend.fit(work.problem, work.reasoning)
        n = sum(backend.count_tokens(m["content"]) for m in work.messages) + 8 * len(work.messages)
        if n > backend.max_input_tokens:
            raise PayloadTooLarge(f"the conversation has about {n} tokens; the limit is "
                                  f"{backend.max_input_tokens} (max_input_tokens)",
                                  param="messages", code="prompt_too_long")
        return work.messages, False

    def _chat_jobs(self, jobs: Sequence[Job]) -> list[Any]:
        assert self.gsrm is not None
        backend = self.gsrm.backend
        outcomes: list[Any] = [None] * len(jobs)
        prompts: dict[int, tuple[list[dict[str, str]], bool]] = {}
        groups: dict[int, list[int]] = defaultdict(list)
        for i, j in enumerate(jobs):
            try:
                prompts[i] = self._chat_prompt(backend, j.payload)
                groups[j.payload.max_new_tokens].append(i)
            except Exception as exc:  # noqa: BLE001
                outcomes[i] = exc
        for limit, idx in groups.items():
            try:
                gens = backend.generate([prompts[i][0] for i in idx], max_new_tokens=limit)
                runs = [(idx, gens)]
            except Exception as exc:  # noqa: BLE001
                if len(idx) == 1:
                    outcomes[idx[0]] = exc
                    continue
                runs = []
                for i in idx:
                    try:
                        runs.append(([i], backend.generate([prompts[i][0]],
                                                           max_new_tokens=limit)))
                    except Exception as e:  # noqa: BLE001
                        outcomes[i] = e
            for ids, gs in runs:
                for i, g in zip(ids, gs):
                    outcomes[i] = ChatOutcome(generation=g, input_truncated=prompts[i][1]
                                              or g.input_truncated,
                                              prompt_built=jobs[i].payload.wrap)
        return outcomes
