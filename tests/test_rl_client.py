"""rl_client: reward client under injected faults, adapters, reward components, payloads.

The client is tested over real loopback HTTP against ``FaultServer``, a stdlib HTTP/1.1 server
whose ``/v1/rewards`` answers follow a per-test script (a 500, a slow answer, a 429 with
Retry-After, a 400, a malformed body, ...) and record every request. Success answers carry
``reward = len(student)`` so order and batch splitting are visible in the numbers. Delays are
recorded through the client's injectable ``sleep`` so backoff and Retry-After are asserted
exactly without waiting. A few tests use the real ``gsrm-serve`` app (sentences backend,
lexical judge) end to end. The central property: a failure raises or, only with
``on_error="skip"``, gives ``None`` — never a number.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from rl_client import adapters
from rl_client.adapters import build_items, make_trl_reward, openrlhf_payload, verl_item
from rl_client.client import (
    AsyncRewardClient,
    RewardClient,
    RewardError,
    build_rewards_payload,
    normalize_item,
    parse_retry_after,
    parse_rewards_response,
    retry_delay,
)
from rl_client.rewards import (
    DEFAULT_WEIGHTS,
    accuracy_reward,
    format_reward,
    get_reward_funcs,
    gold_answer,
    parse_weights,
    tag_count_reward,
)

ROOT = Path(__file__).resolve().parents[1]


# --------------------------------------------------------------------------- fault server
@dataclass
class Action:
    """One scripted answer: ``status`` with ``body``/``headers``, after ``delay`` seconds.

    ``body=None`` on a 200 means "score it" (reward = len(student) per item).
    """

    status: int = 200
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0


@dataclass
class FaultServer:
    url: str
    script: list[Action]
    health: list[Action]
    requests: list[dict[str, Any]]

    @property
    def reward_requests(self) -> list[dict[str, Any]]:
        return [r for r in self.requests if r["path"] == "/v1/rewards"]


def _scored(body: dict[str, Any]) -> dict[str, Any]:
    return {"id": "rwd-x", "object": "list", "created": 0, "model": "m", "usage": {},
            "data": [{"index": i, "object": "reward", "reward": float(len(it["student"])),
                      "normalized_reward": 0.5, "step_rewards": [1.0], "teacher_steps": 2,
                      "student_steps": 1, "warnings": []}
                     for i, it in enumerate(body["items"])]}


@contextmanager
def fault_server() -> Iterator[FaultServer]:
    state = FaultServer("", [], [], [])
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, so the pooled connection is observable

        def log_message(self, *a: Any) -> None:
            pass

        def _send(self, action: Action, body: Any) -> None:
            if action.delay:
                time.sleep(action.delay)
            data = body if isinstance(body, bytes) else json.dumps(body).encode()
            try:
                self.send_response(action.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for k, v in action.headers.items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)
            except (BrokenPipeError, ConnectionResetError):  # the client timed out and left
                pass

        def do_GET(self) -> None:
            with lock:
                state.requests.append({"path": self.path, "port": self.client_address[1]})
                action = state.health.pop(0) if state.health else Action(body={"status":
                                                                                "ready"})
            self._send(action, action.body)

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            with lock:
                state.requests.append({"path": self.path, "body": body,
                                       "port": self.client_address[1],
                                       "auth": self.headers.get("Authorization")})
                action = state.script.pop(0) if state.script else Action()
            out = action.body if action.body is not None or action.status != 200 \
                else _scored(body)
            if out is None:
                out = {"error": {"message": f"injected {action.status}", "type": "test",
                                 "param": None, "code": "injected"}}
            self._send(action, out)

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    try:
        yield state
    finally:
        httpd.shutdown()
        httpd.server_close()


@pytest.fixture
def fs() -> Iterator[FaultServer]:
    with fault_server() as s:
        yield s


ITEMS = [("2+3?", "Add 2 and 3.", "<think>2+3=5</think> 5"), ("p", "t", "abcd")]
EXPECTED = [5.0, 4.0]  # len("2+3=5"), len("abcd"): the student is cut at </think>


class Sleeps(list):
    """Records the client's backoff delays instead of sleeping."""

    def __call__(self, s: float) -> None:
        self.append(round(s, 6))


def run_client(kind: str, url: str, items: Any = ITEMS, **kw: Any) -> list[float | None]:
    """``rewards(items)`` through the sync or the async client with test-friendly defaults."""
    kw = {"backoff_base": 0.01, "rng": lambda: 1.0, "health_timeout": 2.0, **kw}
    if kind == "sync":
        with RewardClient(url, **kw) as c:
            return c.rewards(items)

    async def go() -> list[float | None]:
        async with AsyncRewardClient(url, **kw) as c:
            return await c.rewards(items)

    return asyncio.run(go())


CLIENTS = ["sync", "async"]


# --------------------------------------------------------------------------- faults
@pytest.mark.parametrize("kind", CLIENTS)
def test_500_then_200_is_retried_and_succeeds(fs: FaultServer, kind: str) -> None:
    fs.script += [Action(500)]
    sleeps = Sleeps()
    assert run_client(kind, fs.url, sleep=sleeps) == EXPECTED
    assert len(fs.reward_requests) == 2
    assert fs.reward_requests[0]["body"] == fs.reward_requests[1]["body"]  # same payload resent
    assert sleeps == [0.01]  # backoff_base * 2**0 * rng()


@pytest.mark.parametrize("kind", CLIENTS)
def test_a_response_slower_than_the_timeout_raises_after_retries(fs: FaultServer,
                                                                 kind: str) -> None:
    fs.script += [Action(delay=1.0), Action(delay=1.0)]
    sleeps = Sleeps()
    t0 = time.monotonic()
    with pytest.raises(RewardError, match="Timeout.*gave up after 2 attempts") as ei:
        run_client(kind, fs.url, timeout=0.2, max_retries=1, sleep=sleeps)
    assert time.monotonic() - t0 < 0.9  # bounded by the client's timeout, not the server
    assert ei.value.status is None and ei.value.attempts == 2
    assert len(fs.reward_requests) == 2 and sleeps == [0.01]


@pytest.mark.parametrize("kind", CLIENTS)
def test_429_honours_retry_after(fs: FaultServer, kind: str) -> None:
    fs.script += [Action(429, headers={"Retry-After": "3"})]
    sleeps = Sleeps()
    assert run_client(kind, fs.url, sleep=sleeps) == EXPECTED
    assert sleeps == [3.0]  # the server's Retry-After, not the 0.01 s backoff


def test_429_retry_after_really_waits(fs: FaultServer) -> None:
    # the same with the real sleep: the retry comes no earlier than Retry-After says
    fs.script += [Action(429, headers={"Retry-After": "1"})]
    t0 = time.monotonic()
    assert run_client("sync", fs.url) == EXPECTED
    assert time.monotonic() - t0 >= 1.0


@pytest.mark.parametrize("kind", CLIENTS)
@pytest.mark.parametrize("status", [400, 401, 404, 413, 422])
def test_other_4xx_are_not_retried(fs: FaultServer, kind: str, status: int) -> None:
    fs.script += [Action(status)]
    with pytest.raises(RewardError, match=f"HTTP {status}: injected {status}") as ei:
        run_client(kind, fs.url, sleep=Sleeps())
    assert len(fs.reward_requests) == 1
    assert (ei.value.status, ei.value.code, ei.value.attempts) == (status, "injected", 1)


@pytest.mark.parametrize("kind", CLIENTS)
def test_persistent_5xx_raises_after_max_retries(fs: FaultServer, kind: str) -> None:
    fs.script += [Action(503), Action(502), Action(500)]
    sleeps = Sleeps()
    with pytest.raises(RewardError, match="HTTP 500.*gave up after 3 attempts"):
        run_client(kind, fs.url, max_retries=2, sleep=sleeps)
    assert sleeps == [0.01, 0.02]  # exponential: base * 2**attempt


@pytest.mark.parametrize("kind", CLIENTS)
def test_connection_refused_is_retried_then_raises(kind: str) -> None:
    with fault_server() as s:
        url = s.url  # a port that is closed once the server is gone
    sleeps = Sleeps()
    with pytest.raises(RewardError, match="ConnectError") as ei:
        run_client(kind, url, health_timeout=None, max_retries=2, sleep=sleeps)
    assert ei.value.attempts == 3 and len(sleeps) == 2


MALFORMED = [
    # why each one must not become a reward:
    ({"data": []}, "0 results for 2 items"),                       # an item went missing
    ({"nope": 1}, "no 'data' list"),                               # not our response shape
    ({"data": [{"index": 0, "reward": float("nan")},
               {"index": 1, "reward": 1.0}]}, "not a finite number"),  # NaN would poison GRPO
    ({"data": [{"index": 0, "reward": "1"},
               {"index": 1, "reward": 1.0}]}, "not a finite number"),  # a string is not a reward
    ({"data": [{"index": 0, "reward": 1.0},
               {"index": 0, "reward": 1.0}]}, "bad index 0"),      # duplicated index
]


@pytest.mark.parametrize("kind", CLIENTS)
@pytest.mark.parametrize(("body", "message"), MALFORMED)
def test_malformed_success_bodies_raise(fs: FaultServer, kind: str, body: Any,
                                        message: str) -> None:
    fs.script += [Action(200, body=body)]
    with pytest.raises(RewardError, match=message):
        run_client(kind, fs.url)
    assert len(fs.reward_requests) == 1  # a wrong answer is not retried into a right one


@pytest.mark.parametrize("kind", CLIENTS)
def test_skip_gives_none_only_for_the_failed_chunk(fs: FaultServer, kind: str) -> None:
    items = [("p", "t", "a"), ("p", "t", "bb"), ("p", "t", "ccc")]
    fs.script += [Action(), Action(400)]
    out = run_client(kind, fs.url, items=items, max_items_per_request=2, on_error="skip")
    assert out == [1.0, 2.0, None]


FAULTS = [
    [Action(500), Action(500)],                 # 5xx until retries run out
    [Action(429, headers={"Retry-After": "0"})] * 2,  # rate-limited until retries run out
    [Action(400)],                              # a client error
    [Action(200, body={"data": []})],           # a malformed success
    [Action(delay=1.0), Action(delay=1.0)],     # slower than the timeout
]


@pytest.mark.parametrize("kind", CLIENTS)
@pytest.mark.parametrize("faults", FAULTS)
@pytest.mark.parametrize("on_error", ["raise", "skip"])
def test_no_failure_ever_becomes_a_number(fs: FaultServer, kind: str, faults: list[Action],
                                          on_error: str) -> None:
    fs.script += faults
    kw = {"max_retries": 1, "timeout": 0.2, "sleep": Sleeps(), "on_error": on_error}
    if on_error == "raise":
        with pytest.raises(RewardError):
            run_client(kind, fs.url, **kw)
    else:
        assert run_client(kind, fs.url, **kw) == [None, None]


# --------------------------------------------------------------------------- transport
@pytest.mark.parametrize("kind", CLIENTS)
def test_large_batches_are_split_in_order(fs: FaultServer, kind: str) -> None:
    items = [("p", "t", "x" * n) for n in range(1, 6)]
    assert run_client(kind, fs.url, items=items, max_items_per_request=2) == [1, 2, 3, 4, 5]
    assert [len(r["body"]["items"]) for r in fs.reward_requests] == [2, 2, 1]


def test_one_pooled_connection_is_reused(fs: FaultServer) -> None:
    with RewardClient(fs.url, max_items_per_request=1) as c:
        c.rewards([("p", "t", "a")] * 3)
    ports = {r["port"] for r in fs.requests}  # /health and three /v1/rewards
    assert len(fs.requests) == 4 and len(ports) == 1


def test_options_model_and_api_key_go_on_the_wire(fs: FaultServer) -> None:
    with RewardClient(fs.url, api_key="s3cret", model="gsrm", options={"mode": "paper"}) as c:
        c.rewards([("p", "t", "s")], options={"details": False})
    req = fs.reward_requests[0]
    assert req["auth"] == "Bearer s3cret"
    assert req["body"] == {"model": "gsrm", "options": {"mode": "paper", "details": False},
                           "items": [{"problem": "p", "teacher": "t", "student": "s"}]}


@pytest.mark.parametrize("kind", CLIENTS)
def test_waits_for_health_before_the_first_request(fs: FaultServer, kind: str) -> None:
    loading = Action(503, body={"status": "loading"}, headers={"Retry-After": "0"})
    fs.health += [loading, loading]
    sleeps = Sleeps()
    assert run_client(kind, fs.url, sleep=sleeps) == EXPECTED
    assert [r["path"] for r in fs.requests] == ["/health"] * 3 + ["/v1/rewards"]
    assert sleeps == [0.01, 0.01]  # Retry-After 0, floored at 10 ms


@pytest.mark.parametrize("kind", CLIENTS)
def test_health_wait_is_bounded(fs: FaultServer, kind: str) -> None:
    fs.health += [Action(503, body={"status": "loading"})] * 1000
    t0 = time.monotonic()
    with pytest.raises(RewardError, match="not ready after 0.3 s.*loading"):
        run_client(kind, fs.url, health_timeout=0.3)
    assert time.monotonic() - t0 < 3 and not fs.reward_requests


def test_a_failed_model_load_stops_at_once(fs: FaultServer) -> None:
    fs.health += [Action(503, body={"status": "failed", "error": "no weights"})]
    with pytest.raises(RewardError, match="not usable.*failed"):
        run_client("sync", fs.url, health_timeout=30)
    assert len(fs.requests) == 1


# --------------------------------------------------------------------------- pure helpers
PAYLOADS = [
    # raw text: the student keeps only its reasoning (before </think>), without <think>
    (("q", "T", "<think>r</think> 5"), {"problem": "q", "teacher": "T", "student": "r"}),
    # no </think>: the whole completion is the reasoning
    (("q", "T", "r. 5"), {"problem": "q", "teacher": "T", "student": "r. 5"}),
    # pre-decomposed steps pass through unchanged
    ({"problem": "q", "teacher": [{"meta": "m", "subproblem": "s", "answer": "a"}],
      "student": [{"meta": "m", "subproblem": "s", "answer": "a"}]},
     {"problem": "q", "teacher": [{"meta": "m", "subproblem": "s", "answer": "a"}],
      "student": [{"meta": "m", "subproblem": "s", "answer": "a"}]}),
    # a mapping without a problem gets the empty problem the server expects
    ({"teacher": "T", "student": "s"}, {"problem": "", "teacher": "T", "student": "s"}),
]


@pytest.mark.parametrize(("item", "wire"), PAYLOADS)
def test_normalize_item(item: Any, wire: dict[str, Any]) -> None:
    assert normalize_item(item) == wire


def test_build_rewards_payload_validates_against_the_server_protocol() -> None:
    protocol = pytest.importorskip("server.protocol")
    body = build_rewards_payload([p for p, _ in PAYLOADS], model="gsrm",
                                 options={"mode": "normalized", "details": True})
    req = protocol.RewardsRequest.model_validate(body)  # the server accepts what we send
    assert len(req.items) == 4 and req.options.mode == "normalized"


@pytest.mark.parametrize(("header", "seconds"), [
    ("5", 5.0),                                    # delta-seconds
    ("0", 0.0),
    ("-3", 0.0),                                   # never negative
    ("soon", None),                                # unparsable: fall back to backoff
    ("Thu, 01 Jan 1970 00:01:00 GMT", 50.0),       # an HTTP date, 50 s after now=10
])
def test_parse_retry_after(header: str, seconds: float | None) -> None:
    assert parse_retry_after(header, now=10.0) == seconds


@pytest.mark.parametrize(("attempt", "status", "ra", "delay"), [
    (0, 500, None, 0.5),      # base * 2**0
    (3, 500, None, 4.0),      # base * 2**3
    (10, 500, None, 30.0),    # capped at backoff_max
    (0, 429, "7", 7.0),       # Retry-After wins on 429
    (0, 503, "7", 7.0),       # ... and on 503
    (0, 500, "7", 0.5),       # but not on 500 (not a rate limit)
    (0, 429, "900", 60.0),    # capped at max_retry_after
])
def test_retry_delay(attempt: int, status: int, ra: str | None, delay: float) -> None:
    assert retry_delay(attempt, status, ra, base=0.5, cap=30.0, max_retry_after=60.0,
                       rng=lambda: 1.0) == delay


def test_parse_rewards_response_orders_by_index() -> None:
    body = {"data": [{"index": 1, "reward": 2.0}, {"index": 0, "reward": 1.0,
                                                   "step_rewards": [1, 0]}]}
    out = parse_rewards_response(body, 2)
    assert [r.reward for r in out] == [1.0, 2.0] and out[0].step_rewards == [1.0, 0.0]


# --------------------------------------------------------------------------- reward components
MSG = [{"role": "assistant", "content": "<think>48/2 = 24; 48+24 = 72</think> 72"}]


@pytest.mark.parametrize(("completion", "gold", "expected"), [
    ("<think>48+24=72</think> 72", "#### 72", 1.0),          # GSM8K gold after ####
    (MSG, "#### 72", 1.0),                                  # conversational completion
    ("<think>x</think> The answer is 71.", "#### 72", 0.0),  # wrong number
    ("<think>so it is 72</think> 70", "#### 72", 0.0),       # only the answer part counts
    ("no think tags, 72 clips", "72", 1.0),                  # whole text without </think>
    ("<think>a</think> $1,000", "#### 1,000", 1.0),          # thousands commas and $ signs
    ("<think>a</think> 0.5", "\\frac{1}{2}", 1.0),           # LaTeX gold, math-verify equality
    ("<think>a</think> 5", "no number here", None),          # unparsable gold: skip, not 0
])
def test_accuracy(completion: Any, gold: str, expected: float | None) -> None:
    assert accuracy_reward([completion], answer=[gold]) == [expected]


@pytest.mark.parametrize(("text", "fmt", "tags"), [
    ("<think>r</think> 5", 1.0, 1.0),          # the target format
    ("  <think>r</think>\n5", 1.0, 1.0),       # leading whitespace is fine
    ("<think>r</think>", 0.0, 0.75),           # no answer after </think>
    ("<think></think> 5", 0.0, 1.0),           # empty reasoning fails format, tags are right
    ("5 <think>r</think> 5", 0.0, 0.75),       # does not start with <think>
    ("<think>r</think> 5 </think>", 0.0, 0.5),  # two closing tags
    ("<think>r <think>s</think> 5", 0.0, 0.75),  # nested opening tag
    ("The answer is 5", 0.0, 0.0),             # no tags at all
])
def test_format_and_tag_count(text: str, fmt: float, tags: float) -> None:
    assert format_reward([text]) == [fmt]
    assert tag_count_reward([[{"role": "assistant", "content": text}]]) == [tags]


def test_gold_answer() -> None:
    assert [gold_answer(a) for a in ["x\n#### 1,234,567", "#### -3", "7"]] == \
        ["1234567", "-3", "7"]


def test_registry_names_weights_and_trl_signature() -> None:
    funcs = get_reward_funcs(["accuracy", "format", "tag_count"])
    assert [f.__name__ for f in funcs] == ["accuracy", "format", "tag_count"]
    # TRL passes extra columns and hooks as keyword arguments; they must be accepted
    out = [f(prompts=["q"], completions=["<think>r</think> 7"], answer=["#### 7"],
             completion_ids=[[1]], trainer_state=None, problem=["q"]) for f in funcs]
    assert out == [[1.0], [1.0], [1.0]]
    assert DEFAULT_WEIGHTS == {"accuracy": 15, "format": 10, "tag_count": 10, "gsrm": 15}
    assert parse_weights("", ["accuracy", "format", "tag_count", "gsrm"]) == [15, 10, 10, 15]
    assert parse_weights("gsrm=1.5, format=0", ["gsrm", "format"]) == [1.5, 0.0]
    with pytest.raises(ValueError, match="unknown reward"):
        get_reward_funcs(["nope"])
    with pytest.raises(ValueError, match="bad weight"):
        parse_weights("gsrm", ["gsrm"])


def test_local_gsrm_component_scores_in_process() -> None:
    from gsrm.model import GSRM

    f = get_reward_funcs(["gsrm"], gsrm_kwargs={"gsrm": "local", "backend": "sentences",
                                                 "judge": "lexical"})[0]
    teacher = "Add 2 and 3 to get 5. Double 5 to get 10."
    out = f(prompts=["q"] * 2, completions=[f"<think>{teacher}</think> 10", "<think></think>"],
            problem=["q"] * 2, teacher_reasoning=[teacher] * 2)
    ref = GSRM.from_names(backend="sentences", judge="lexical").score("q", teacher, teacher)
    assert out == [ref.reward, 0.0] and ref.reward == 2.0  # empty student: a scored 0


# --------------------------------------------------------------------------- adapters
TEACHER = "Add 2 and 3 to get 5. Double it to get 10."


def test_trl_reward_builds_items_from_columns_and_conversations(fs: FaultServer) -> None:
    f = make_trl_reward(fs.url, health_timeout=2)
    prompts = [[{"role": "user", "content": "2+3, doubled?"}]] * 2
    completions = [[{"role": "assistant", "content": "<think>5, so 10</think> 10"}],
                   [{"role": "assistant", "content": "ten"}]]
    logged: dict[str, float] = {}
    out = f(prompts=prompts, completions=completions, problem=["P"] * 2,
            teacher_reasoning=[TEACHER] * 2, completion_ids=[[1], [2]],
            log_metric=lambda k, v: logged.__setitem__(k, v))
    assert out == [len("5, so 10"), len("ten")] and f.__name__ == "gsrm"
    assert fs.reward_requests[0]["body"]["items"] == [
        {"problem": "P", "teacher": TEACHER, "student": "5, so 10"},
        {"problem": "P", "teacher": TEACHER, "student": "ten"}]
    assert logged == {"gsrm/skipped": 0.0, "gsrm/truncated": 0.0, "gsrm/hit_budget": 0.0,
                      "gsrm/loop": 0.0, "gsrm/empty_student": 0.0}


def test_async_trl_reward_is_async_and_matches(fs: FaultServer) -> None:
    import inspect

    f = make_trl_reward(fs.url, async_=True, health_timeout=2)
    # TRL's is_async_callable: a callable instance whose __call__ is a coroutine function
    assert inspect.iscoroutinefunction(f.__call__)  # TRL will await it on its reward loop
    out = asyncio.run(f(prompts=["2+3?"], completions=["<think>abc</think> x"],
                        teacher_reasoning=[TEACHER]))
    assert out == [3.0]
    assert fs.reward_requests[0]["body"]["items"][0]["problem"] == "2+3?"  # from the prompt


def test_trl_reward_failure_raises_or_skips(fs: FaultServer) -> None:
    fs.script += [Action(400), Action(400)]
    kw = {"prompts": ["q"], "completions": ["c"], "teacher_reasoning": [TEACHER]}
    with pytest.raises(RewardError):
        make_trl_reward(fs.url, health_timeout=2)(**kw)
    logged: dict[str, float] = {}
    skip = make_trl_reward(fs.url, health_timeout=2, on_error="skip")
    assert skip(**kw, log_metric=lambda k, v: logged.__setitem__(k, v)) == [None]
    assert logged["gsrm/skipped"] == 1.0 and logged["gsrm/hit_budget"] == 0.0


def test_trl_reward_needs_the_teacher_column() -> None:
    with pytest.raises(ValueError, match="teacher_reasoning"):
        build_items(["q"], ["c"], None, None)


def test_verl_compute_score(fs: FaultServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GSRM_URL", fs.url)
    monkeypatch.setattr(adapters, "_VERL_CLIENT", None)
    assert adapters.compute_score("gsm8k", "<think>abcd</think> 5", TEACHER,
                                  extra_info={"question": "Q"}) == 4.0
    assert adapters.compute_score_batch(["gsm8k"] * 2, ["ab", "abc"],
                                        [{"teacher_reasoning": TEACHER, "problem": "R"}] * 2,
                                        None) == [2.0, 3.0]
    items = [r["body"]["items"] for r in fs.reward_requests]
    assert items[0][0]["problem"] == "Q" and items[1][0]["problem"] == "R"
    fs.script += [Action(500)] * 10
    adapters._VERL_CLIENT.max_retries, adapters._VERL_CLIENT.backoff_base = 2, 0.01
    with pytest.raises(RewardError):  # verl sees the failure, never a 0
        adapters.compute_score("gsm8k", "x", TEACHER)
    with pytest.raises(ValueError, match="teacher"):
        verl_item("x", {"problem": "p"})


def test_openrlhf_payload_validates_against_the_server_protocol() -> None:
    protocol = pytest.importorskip("server.protocol")
    body = openrlhf_payload(["<|im_start|>user\nq<|im_end|>\n<|im_start|>assistant\na"],
                            ["<|im_start|>user\nq<|im_end|>\n<|im_start|>assistant\n"], [TEACHER])
    assert protocol.GetRewardRequest.model_validate(body).labels == [TEACHER]


# --------------------------------------------------------------------------- real server
@contextmanager
def real_server(gsrm: Any = None) -> Iterator[str]:
    """gsrm-serve's app (sentences backend, lexical judge, or ``gsrm``) under uvicorn on loopback."""
    pytest.importorskip("fastapi")
    uvicorn = pytest.importorskip("uvicorn")
    from gsrm.model import GSRM
    from server.app import create_app
    from server.settings import Settings

    app = create_app(Settings(backend="sentences", judge="lexical", graceful_timeout_s=5),
                     gsrm=gsrm or GSRM.from_names(backend="sentences", judge="lexical"))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "server did not start"
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{server.servers[0].sockets[0].getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(15)


@pytest.fixture(scope="module")
def real_url() -> Iterator[str]:
    with real_server() as url:
        yield url


STEPS = json.loads((ROOT / "examples" / "teacher_steps.json").read_text())
ALIGNED = json.loads((ROOT / "examples" / "student_aligned_steps.json").read_text())


@pytest.mark.parametrize("kind", CLIENTS)
def test_real_server_rewards_match_the_library(real_url: str, kind: str) -> None:
    from gsrm.model import GSRM

    g = GSRM.from_names(backend="sentences", judge="lexical")
    items = [(STEPS["problem"], STEPS["steps"], ALIGNED["steps"]),
             ("q", TEACHER, f"<think>{TEACHER}</think> 10"), ("q", TEACHER, "")]
    expected = [g.score(p, t, s).reward for p, t, s in
                [(items[0]), ("q", TEACHER, TEACHER), ("q", TEACHER, "")]]
    assert run_client(kind, real_url, items=items, max_items_per_request=2) == expected
    assert expected[2] == 0.0 and expected[1] == 2.0  # empty: 0; the teacher itself: the max


def test_real_server_413_is_not_retried(real_url: str) -> None:
    sleeps = Sleeps()
    with pytest.raises(RewardError, match="HTTP 413") as ei:
        run_client("sync", real_url, items=[("q", TEACHER, "s")] * 600,
                   max_items_per_request=600, sleep=sleeps)
    assert ei.value.attempts == 1 and sleeps == []


def test_openrlhf_example_script_against_the_real_server(
        real_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    import importlib.util

    spec = importlib.util.spec_from_file_location("openrlhf_remote_rm",
                                                  ROOT / "examples" / "openrlhf_remote_rm.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert mod.main(["--url", real_url + "/get_reward"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert len(out["rewards"]) == 2 and all(isinstance(r, float) for r in out["rewards"])
    assert set(out) == {"rewards", "scores", "extra_logs"}
    # an unreachable server is a non-zero exit with a message, not a reward
    assert mod.main(["--url", "http://127.0.0.1:9/get_reward", "--timeout", "2"]) == 1


# --------------------------------------------------------------------------- issue 17, row 12
class FlaggingBackend:
    """Sentence decompositions whose generation facts follow markers in the text: CUT (input
    truncated), BUDGET (stopped at max_new_tokens), LOOP (stopped in a loop)."""

    def __new__(cls) -> Any:
        from gsrm.backends import SentenceBackend

        class _Flagging(SentenceBackend):
            name = "flagging"

            def decompose_many(self, items: Any) -> Any:
                gens = super().decompose_many(items)
                for g, (_, text) in zip(gens, items):
                    g.input_truncated = "CUT" in text
                    g.hit_max_new_tokens = "BUDGET" in text
                    g.stopped_in_loop = "LOOP" in text
                return gens

        return _Flagging()


def _flagging_gsrm() -> Any:
    from gsrm.judges import LexicalJudge
    from gsrm.model import GSRM

    return GSRM(backend=FlaggingBackend(), judge=LexicalJudge())


FLAG_COMPLETIONS = [
    # (completion, flags its item must carry) -- why each is there:
    ("<think>Add 2 and 3 to get 5.</think> 5", []),  # a clean item counts nowhere
    ("<think>Add 2 and 3: BUDGET 5.</think> 5", ["hit_budget"]),  # the student hit the budget
    ("<think>Add 2 and 3 CUT.</think> 5", ["truncated"]),  # the student's input was cut
    ("<think>BUDGET and LOOP = 5.</think> 5", ["hit_budget", "loop"]),  # two at once
    ("<think></think> 5", ["empty_student"]),  # no reasoning: scored 0 without a model call
]
FLAG_COUNTS = {"gsrm/skipped": 0.0, "gsrm/truncated": 1.0, "gsrm/hit_budget": 2.0,
               "gsrm/loop": 1.0, "gsrm/empty_student": 1.0}


def _call_trl(f: Any) -> tuple[list[float | None], dict[str, float], dict[str, list[str]]]:
    metrics: dict[str, float] = {}
    extra: dict[str, list[str]] = {}
    kw = {"prompts": ["2+3?"] * len(FLAG_COMPLETIONS),
          "completions": [c for c, _ in FLAG_COMPLETIONS],
          "teacher_reasoning": ["Add 2 and 3 to get 5."] * len(FLAG_COMPLETIONS),
          "log_metric": lambda k, v: metrics.__setitem__(k, v),
          "log_extra": lambda k, v: extra.__setitem__(k, v)}
    out = asyncio.run(f(**kw)) if asyncio.iscoroutinefunction(f.__call__) else f(**kw)
    return out, metrics, extra


def _check_flags(f: Any) -> None:
    out, metrics, extra = _call_trl(f)
    assert metrics == FLAG_COUNTS  # counted into TRL's metrics (was: only gsrm/skipped)
    assert [r.flags for r in f.last_results] == [fl for _, fl in FLAG_COMPLETIONS]  # per item
    assert out == [r.reward for r in f.last_results] and out[-1] == 0.0
    warnings = extra["gsrm_warnings"]  # one entry per sample in TRL's completions table
    assert len(warnings) == len(FLAG_COMPLETIONS)
    assert "max_new_tokens" not in warnings[0] and "loop" not in warnings[0]
    assert "student: generation stopped at max_new_tokens" in warnings[1]
    assert "student: empty reasoning" in warnings[-1]


def test_local_scorer_keeps_warnings_and_flags_per_item_and_trl_counts_them() -> None:
    # issue 17 row 12, --gsrm local: rewards.py used to keep the reward only
    from rl_client.rewards import LocalScorer

    _check_flags(make_trl_reward(LocalScorer(_flagging_gsrm())))


@pytest.mark.parametrize("async_", [False, True], ids=["sync", "async"])
def test_http_client_keeps_warnings_and_flags_per_item_and_trl_counts_them(async_: bool) -> None:
    # issue 17 row 12 against a live gsrm-serve: client.py used to keep the reward only
    with real_server(_flagging_gsrm()) as url:
        _check_flags(make_trl_reward(url, async_=async_, health_timeout=10))
