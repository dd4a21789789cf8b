"""HTTP client for the GSRM reward endpoint (``POST /v1/rewards``), sync and async.

Why a dedicated client: an RL trainer calls the reward model thousands of times, and the
released RLKD code turned every exception into a reward of 0, so an outage silently trained
the student on zeros. This client makes infrastructure failures loud:

- transient failures (connection errors, timeouts, 5xx, 429) are retried with exponential
  backoff and full jitter; ``Retry-After`` is honoured when the server sends it;
- other 4xx answers (bad request, too large, auth) are the caller's bug: no retry;
- when retries run out the call raises :class:`RewardError`; a per-sample ``None`` (TRL's
  "skip this sample") is returned only if the caller asked for ``on_error="skip"``;
- a failure is never turned into a number.

The transport keeps one pooled keep-alive connection, splits large batches into requests of at
most ``max_items_per_request`` pairs (the server refuses more than its ``max_items`` with 413),
and waits (bounded) for ``GET /health`` to say ``ready`` before its first request.

Payload building and response parsing are pure functions (:func:`build_rewards_payload`,
:func:`parse_rewards_response`, :func:`retry_delay`, ...) so they are tested without a network.

Example::

    >>> build_rewards_payload([("2+3?", "Add 2 and 3: 5.", "<think>2+3=5</think> 5")],
    ...                       model="gsrm", options={"mode": "paper"})["items"][0]["student"]
    '2+3=5'

    $ gsrm-serve --backend sentences --judge lexical --port 8000 &
    >>> with RewardClient("http://127.0.0.1:8000") as c:        # doctest: +SKIP
    ...     c.rewards([("2+3?", "Add 2 and 3: 5.", "2+3 = 5.")])
    [1.0]
"""

from __future__ import annotations

import asyncio
import email.utils
import math
import random
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:  # httpx is imported where a client is built, not at import
    import httpx
    from typing_extensions import Self

#: one side of a comparison: raw reasoning text or a list of steps {"meta","subproblem","answer"}
Side = str | Sequence[Mapping[str, str]]
#: a pair to score: (problem, teacher, student) or a mapping with those keys
ItemLike = tuple[str, Side, Side] | Mapping[str, Any]
OnError = Literal["raise", "skip"]

RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})


class RewardError(RuntimeError):
    """The reward could not be computed; no number stands in for it.

    ``status`` is the last HTTP status (None for a transport failure), ``code``/``type`` come
    from the server's OpenAI-style error body, ``attempts`` counts the requests made.
    """

    def __init__(self, message: str, *, status: int | None = None, code: str | None = None,
                 type: str | None = None, attempts: int = 0, retryable: bool = False) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.type = type
        self.attempts = attempts
        self.retryable = retryable


# --------------------------------------------------------------------------- pure helpers
def _strip_think(text: str) -> str:
    from gsrm.model import strip_think

    return strip_think(text)


def normalize_item(item: ItemLike) -> dict[str, Any]:
    """One wire item ``{"problem", "teacher", "student"}`` from a tuple or a mapping.

    A raw-text student keeps only its reasoning (the text before ``</think>``), as the server
    would; steps are sent as given.

    >>> normalize_item({"problem": "p", "teacher": "t", "student": "s</think> 5"})
    {'problem': 'p', 'teacher': 't', 'student': 's'}
    """
    if isinstance(item, Mapping):
        problem, teacher, student = item.get("problem", ""), item["teacher"], item["student"]
    else:
        problem, teacher, student = item
    if isinstance(student, str):
        student = _strip_think(student)
    else:
        student = [dict(s) for s in student]
    if not isinstance(teacher, str):
        teacher = [dict(s) for s in teacher]
    return {"problem": problem or "", "teacher": teacher, "student": student}


def build_rewards_payload(items: Sequence[ItemLike], model: str | None = None,
                          options: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The JSON body of ``POST /v1/rewards`` for ``items`` (see ``server.protocol``).

    >>> build_rewards_payload([("p", "t", "s")])
    {'items': [{'problem': 'p', 'teacher': 't', 'student': 's'}]}
    """
    body: dict[str, Any] = {"items": [normalize_item(it) for it in items]}
    if model:
        body["model"] = model
    if options:
        body["options"] = dict(options)
    return body


@dataclass
class RewardResult:
    """One scored pair as the server reported it (``data[i]`` of the response).

    ``warnings`` and ``flags`` say what the reward rests on less than the whole input for (a
    cut trace, a decomposition stopped at the budget or in a loop, an empty student); the TRL
    adapter counts the flags into the trainer's metrics.
    """

    reward: float
    step_rewards: list[float] = field(default_factory=list)
    teacher_steps: int = 0
    student_steps: int = 0
    normalized_reward: float | None = None
    warnings: list[str] = field(default_factory=list)
    #: ``gsrm.flags`` names (truncated, hit_budget, loop, empty_student): what the trainer counts
    flags: list[str] = field(default_factory=list)
    raw: dict[str, Any] = field(default_factory=dict, repr=False)


def parse_rewards_response(body: Any, n_items: int) -> list[RewardResult]:
    """Results in request order from a ``/v1/rewards`` response body; a malformed body raises.

    Why strict: a response that is missing an item or carries a non-finite reward must not
    become a training signal.

    >>> parse_rewards_response({"data": [{"index": 0, "reward": 2.5, "step_rewards": [1, 1.5],
    ...     "teacher_steps": 3, "student_steps": 2}]}, 1)[0].reward
    2.5
    >>> parse_rewards_response({"data": []}, 1)
    Traceback (most recent call last):
    ...
    rl_client.client.RewardError: malformed /v1/rewards response: 0 results for 1 items
    """
    data = body.get("data") if isinstance(body, Mapping) else None
    if not isinstance(data, list):
        raise RewardError("malformed /v1/rewards response: no 'data' list")
    if len(data) != n_items:
        raise RewardError(f"malformed /v1/rewards response: {len(data)} results for "
                          f"{n_items} items")
    out: list[RewardResult | None] = [None] * n_items
    for pos, d in enumerate(data):
        if not isinstance(d, Mapping):
            raise RewardError(f"malformed /v1/rewards response: data[{pos}] is not an object")
        idx = d.get("index", pos)
        reward = d.get("reward")
        if not isinstance(idx, int) or not 0 <= idx < n_items or out[idx] is not None:
            raise RewardError(f"malformed /v1/rewards response: bad index {idx!r}")
        if isinstance(reward, bool) or not isinstance(reward, (int, float)) \
                or not math.isfinite(reward):
            raise RewardError(f"malformed /v1/rewards response: data[{pos}].reward is "
                              f"{reward!r}, not a finite number")
        out[idx] = RewardResult(
            reward=float(reward),
            step_rewards=[float(x) for x in d.get("step_rewards", [])],
            teacher_steps=int(d.get("teacher_steps", 0)),
            student_steps=int(d.get("student_steps", 0)),
            normalized_reward=d.get("normalized_reward"),
            warnings=[str(w) for w in d.get("warnings", [])],
            flags=[str(f) for f in d.get("flags", [])],
            raw=dict(d),
        )
    return [r for r in out if r is not None]


def error_message(status: int, body: Any, text: str = "") -> tuple[str, str | None, str | None]:
    """(message, code, type) from an error response; the server's OpenAI-style body if any.

    >>> error_message(413, {"error": {"message": "too many items", "type": "x", "code": "c"}})
    ('HTTP 413: too many items', 'c', 'x')
    """
    if isinstance(body, Mapping) and isinstance(body.get("error"), Mapping):
        err = body["error"]
        return f"HTTP {status}: {err.get('message', '')}", err.get("code"), err.get("type")
    snippet = (text or "").strip().replace("\n", " ")[:200]
    return f"HTTP {status}: {snippet or 'no body'}", None, None


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or an HTTP date).

    >>> parse_retry_after("2"), parse_retry_after("junk"), parse_retry_after(None)
    (2.0, None, None)
    >>> parse_retry_after("Thu, 01 Jan 1970 00:00:10 GMT", now=4.0)
    6.0
    """
    if value is None:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def backoff_delay(attempt: int, base: float, cap: float,
                  rng: Callable[[], float] = random.random) -> float:
    """Exponential backoff with full jitter: uniform in [0, min(cap, base * 2**attempt)].

    Why jitter: many GRPO workers that failed together must not retry together.

    >>> backoff_delay(3, 0.5, 30.0, rng=lambda: 1.0), backoff_delay(10, 0.5, 30.0, rng=lambda: 0.5)
    (4.0, 15.0)
    """
    return min(cap, base * (2 ** attempt)) * rng()


def retry_delay(attempt: int, status: int | None, retry_after: str | None, *, base: float,
                cap: float, max_retry_after: float,
                rng: Callable[[], float] = random.random) -> float:
    """How long to wait before retry ``attempt`` (0-based) after a retryable failure.

    A server's ``Retry-After`` (on 429/503) wins over the backoff, capped at
    ``max_retry_after`` so a misconfigured server cannot park the trainer for hours.

    >>> retry_delay(0, 429, "3", base=0.5, cap=30, max_retry_after=60, rng=lambda: 0.0)
    3.0
    >>> retry_delay(2, 500, None, base=0.5, cap=30, max_retry_after=60, rng=lambda: 1.0)
    2.0
    """
    ra = parse_retry_after(retry_after) if status in (429, 503) else None
    if ra is not None:
        return min(ra, max_retry_after)
    return backoff_delay(attempt, base, cap, rng)


def chunks(seq: Sequence[Any], size: int) -> Iterator[tuple[int, Sequence[Any]]]:
    """(offset, slice) pieces of ``seq`` of at most ``size`` elements.

    >>> [(o, list(c)) for o, c in chunks([1, 2, 3, 4, 5], 2)]
    [(0, [1, 2]), (2, [3, 4]), (4, [5])]
    """
    if size < 1:
        raise ValueError("chunk size must be >= 1")
    for off in range(0, len(seq), size):
        yield off, seq[off:off + size]


# --------------------------------------------------------------------------- shared config
class _Base:
    """Settings and the retry decision shared by the sync and async clients."""

    def __init__(
        self,
        base_url: str = "http://127.0.0.1:8000",
        *,
        api_key: str | None = None,
        model: str | None = None,
        options: Mapping[str, Any] | None = None,
        timeout: float = 120.0,
        connect_timeout: float = 10.0,
        max_retries: int = 4,
        backoff_base: float = 0.5,
        backoff_max: float = 30.0,
        max_retry_after: float = 120.0,
        max_items_per_request: int = 64,
        health_timeout: float | None = 300.0,
        on_error: OnError = "raise",
        sleep: Callable[[float], Any] | None = None,
        rng: Callable[[], float] = random.random,
        transport: Any = None,
    ) -> None:
        """Configure a client; nothing connects until the first call.

        ``timeout`` bounds one request (read/write); ``max_retries`` retries follow the first
        attempt; ``health_timeout`` bounds the wait for ``/health`` before the first request
        (None or 0: do not wait). ``sleep`` and ``rng`` exist so tests can record delays.
        """
        if on_error not in ("raise", "skip"):
            raise ValueError(f"on_error must be 'raise' or 'skip', not {on_error!r}")
        if max_items_per_request < 1:
            raise ValueError("max_items_per_request must be >= 1")
        self.base_url = base_url.rstrip("/")
        self.api_key = api_key
        self.model = model
        self.options = dict(options or {})
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self.max_retries = max(0, max_retries)
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self.max_retry_after = max_retry_after
        self.max_items_per_request = max_items_per_request
        self.health_timeout = health_timeout
        self.on_error: OnError = on_error
        self._sleep = sleep
        self._rng = rng
        self._transport = transport
        self._ready = not health_timeout
        self.stats = {"requests": 0, "retries": 0, "failures": 0}

    def _headers(self) -> dict[str, str]:
        h = {"Accept": "application/json"}
        if self.api_key:
            h["Authorization"] = f"Bearer {self.api_key}"
        return h

    def _timeout(self) -> httpx.Timeout:
        import httpx

        return httpx.Timeout(self.timeout, connect=self.connect_timeout, pool=None)

    def _limits(self) -> httpx.Limits:
        import httpx

        return httpx.Limits(max_connections=1, max_keepalive_connections=1)

    def _delay(self, attempt: int, status: int | None, retry_after: str | None) -> float:
        return retry_delay(attempt, status, retry_after, base=self.backoff_base,
                           cap=self.backoff_max, max_retry_after=self.max_retry_after,
                           rng=self._rng)

    def _payloads(self, items: Sequence[ItemLike], options: Mapping[str, Any] | None
                  ) -> list[tuple[int, int, dict[str, Any]]]:
        opts = {**self.options, **(options or {})}
        return [(off, len(part), build_rewards_payload(part, self.model, opts))
                for off, part in chunks(list(items), self.max_items_per_request)]

    def _classify(self, response: httpx.Response) -> RewardError | None:
        """None for a 2xx; otherwise the error (``retryable`` set for 5xx and 429)."""
        if response.is_success:
            return None
        try:
            body = response.json()
        except ValueError:
            body = None
        msg, code, typ = error_message(response.status_code, body, response.text)
        return RewardError(f"reward request to {response.request.url} failed: {msg}",
                           status=response.status_code, code=code, type=typ,
                           retryable=response.status_code in RETRY_STATUSES)

    def _health_state(self, response: httpx.Response) -> str:
        try:
            body = response.json()
        except ValueError:
            return "unknown"
        return str(body.get("status", "unknown")) if isinstance(body, Mapping) else "unknown"

    def _health_failed(self, detail: str) -> RewardError:
        return RewardError(f"the reward server at {self.base_url} is not usable: {detail}")

    def _finish(self, results: list[list[RewardResult] | RewardError], sizes: list[int],
                on_error: OnError) -> list[RewardResult | None]:
        out: list[RewardResult | None] = []
        for res, n in zip(results, sizes):
            if isinstance(res, RewardError):
                self.stats["failures"] += n
                if on_error == "raise":
                    raise res
                out.extend([None] * n)
            else:
                out.extend(res)
        return out


def _rewards_of(results: list[RewardResult | None]) -> list[float | None]:
    return [None if r is None else r.reward for r in results]


# --------------------------------------------------------------------------- sync client
class RewardClient(_Base):
    """Synchronous client; thread-safe (one ``httpx.Client`` with one pooled connection).

    ``rewards(items)`` returns one float per item (``None`` only with ``on_error="skip"``);
    ``score(items)`` returns the full per-item results (step rewards, step counts).
    """

    _client: httpx.Client | None = None

    def _http(self) -> httpx.Client:
        if self._client is None:
            import httpx

            self._client = httpx.Client(base_url=self.base_url, timeout=self._timeout(),
                                        limits=self._limits(), headers=self._headers(),
                                        transport=self._transport)
        return self._client

    def _pause(self, seconds: float) -> None:
        (time.sleep if self._sleep is None else self._sleep)(seconds)

    def close(self) -> None:
        """Close the pooled connection (the client reopens it if used again)."""
        if self._client is not None:
            self._client.close()
            self._client = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def wait_until_ready(self, timeout: float | None = None) -> None:
        """Poll ``GET /health`` until it says ``ready``; raise RewardError after ``timeout`` s.

        ``failed`` (the model could not load) raises at once; 401 (wrong key) too.
        """
        import httpx

        limit = self.health_timeout if timeout is None else timeout
        deadline = time.monotonic() + (limit or 0)
        attempt = 0
        last = "no answer"
        while True:
            try:
                r = self._http().get("/health", timeout=min(self.timeout, 10.0))
                state = self._health_state(r)
                if r.status_code == 200 and state == "ready":
                    self._ready = True
                    return
                if state == "failed" or r.status_code in (401, 403, 404):
                    raise self._health_failed(f"/health answered {r.status_code} {r.text[:200]}")
                last = f"/health says {state!r} (HTTP {r.status_code})"
                wait = parse_retry_after(r.headers.get("Retry-After"))
            except httpx.TransportError as exc:
                last = f"{type(exc).__name__}: {exc}"
                wait = None
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise self._health_failed(f"not ready after {limit:g} s ({last})")
            delay = wait if wait is not None else min(2.0, self.backoff_base * 2 ** attempt)
            self._pause(max(0.01, min(delay, remaining)))
            attempt += 1

    def _post(self, payload: dict[str, Any], n: int) -> list[RewardResult] | RewardError:
        import httpx

        err: RewardError | None = None
        for attempt in range(self.max_retries + 1):
            if attempt:
                self.stats["retries"] += 1
            self.stats["requests"] += 1
            retry_after = None
            try:
                r = self._http().post("/v1/rewards", json=payload)
            except httpx.TransportError as exc:
                err = RewardError(f"reward request to {self.base_url}/v1/rewards failed: "
                                  f"{type(exc).__name__}: {exc or 'no detail'}", retryable=True)
                status = None
            else:
                status = r.status_code
                err = self._classify(r)
                if err is None:
                    try:
                        return parse_rewards_response(r.json(), n)
                    except (ValueError, RewardError) as exc:
                        return RewardError(f"reward request to {self.base_url}/v1/rewards: "
                                           f"{exc}", status=status, attempts=attempt + 1)
                retry_after = r.headers.get("Retry-After")
            err.attempts = attempt + 1
            if not err.retryable or attempt == self.max_retries:
                break
            self._pause(self._delay(attempt, status, retry_after))
        assert err is not None
        if err.retryable:
            err.args = (f"{err.args[0]} (gave up after {err.attempts} attempts)",)
        return err

    def score(self, items: Sequence[ItemLike], *, options: Mapping[str, Any] | None = None,
              on_error: OnError | None = None) -> list[RewardResult | None]:
        """Full results for ``items``, in order, split into requests of bounded size."""
        if not items:
            return []
        if not self._ready:
            self.wait_until_ready()
        parts = self._payloads(items, options)
        results = [self._post(body, n) for _, n, body in parts]
        return self._finish(results, [n for _, n, _ in parts], on_error or self.on_error)

    def rewards(self, items: Sequence[ItemLike], *, options: Mapping[str, Any] | None = None,
                on_error: OnError | None = None) -> list[float | None]:
        """One reward per item; a failure raises RewardError (or gives None with "skip")."""
        return _rewards_of(self.score(items, options=options, on_error=on_error))


# --------------------------------------------------------------------------- async client
class AsyncRewardClient(_Base):
    """Asynchronous twin of :class:`RewardClient` (``httpx.AsyncClient``), same semantics.

    The underlying connection belongs to the event loop of the first call: use one client per
    loop (TRL runs async reward functions on one dedicated loop, so one client suffices).
    """

    _client: httpx.AsyncClient | None = None

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            import httpx

            self._client = httpx.AsyncClient(base_url=self.base_url, timeout=self._timeout(),
                                             limits=self._limits(), headers=self._headers(),
                                             transport=self._transport)
        return self._client

    async def _pause(self, seconds: float) -> None:
        if self._sleep is not None:
            res = self._sleep(seconds)
            if asyncio.iscoroutine(res):
                await res
            return
        await asyncio.sleep(seconds)

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def wait_until_ready(self, timeout: float | None = None) -> None:
        """Async version of :meth:`RewardClient.wait_until_ready`."""
        import httpx

        limit = self.health_timeout if timeout is None else timeout
        deadline = time.monotonic() + (limit or 0)
        attempt = 0
        last = "no answer"
        while True:
            try:
                r = await self._http().get("/health", timeout=min(self.timeout, 10.0))
                state = self._health_state(r)
                if r.status_code == 200 and state == "ready":
                    self._ready = True
                    return
                if state == "failed" or r.status_code in (401, 403, 404):
                    raise self._health_failed(f"/health answered {r.status_code} {r.text[:200]}")
                last = f"/health says {state!r} (HTTP {r.status_code})"
                wait = parse_retry_after(r.headers.get("Retry-After"))
            except httpx.TransportError as exc:
                last = f"{type(exc).__name__}: {exc}"
                wait = None
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise self._health_failed(f"not ready after {limit:g} s ({last})")
            delay = wait if wait is not None else min(2.0, self.backoff_base * 2 ** attempt)
            await self._pause(max(0.01, min(delay, remaining)))
            attempt += 1

    async def _post(self, payload: dict[str, Any], n: int) -> list[RewardResult] | RewardError:
        import httpx

        err: RewardError | None = None
        for attempt in range(self.max_retries + 1):
            if attempt:
                self.stats["retries"] += 1
            self.stats["requests"] += 1
            retry_after = None
            try:
                r = await self._http().post("/v1/rewards", json=payload)
            except httpx.TransportError as exc:
                err = RewardError(f"reward request to {self.base_url}/v1/rewards failed: "
                                  f"{type(exc).__name__}: {exc or 'no detail'}", retryable=True)
                status = None
            else:
                status = r.status_code
                err = self._classify(r)
                if err is None:
                    try:
                        return parse_rewards_response(r.json(), n)
                    except (ValueError, RewardError) as exc:
                        return RewardError(f"reward request to {self.base_url}/v1/rewards: "
                                           f"{exc}", status=status, attempts=attempt + 1)
                retry_after = r.headers.get("Retry-After")
            err.attempts = attempt + 1
            if not err.retryable or attempt == self.max_retries:
                break
            await self._pause(self._delay(attempt, status, retry_after))
        assert err is not None
        if err.retryable:
            err.args = (f"{err.args[0]} (gave up after {err.attempts} attempts)",)
        return err

    async def score(self, items: Sequence[ItemLike], *,
                    options: Mapping[str, Any] | None = None,
                    on_error: OnError | None = None) -> list[RewardResult | None]:
        """Full results for ``items``, in order (requests sent one after another)."""
        if not items:
            return []
        if not self._ready:
            await self.wait_until_ready()
        parts = self._payloads(items, options)
        results = [await self._post(body, n) for _, n, body in parts]
        return self._finish(results, [n for _, n, _ in parts], on_error or self.on_error)

    async def rewards(self, items: Sequence[ItemLike], *,
                      options: Mapping[str, Any] | None = None,
                      on_error: OnError | None = None) -> list[float | None]:
        """One reward per item; a failure raises RewardError (or gives None with "skip")."""
        return _rewards_of(await self.score(items, options=options, on_error=on_error))
