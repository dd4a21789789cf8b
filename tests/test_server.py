"""gsrm-serve against a live uvicorn on 127.0.0.1: endpoints, errors, limits, auth, batching.

Every test talks HTTP to a real server started in a background thread (``live_server``) with a
fast injected GSRM: the model-free ``sentences`` backend and the ``lexical`` judge, or small
fake backends that record their batches, block on an event (to fill the queue
deterministically), or fail on purpose. Expected rewards are computed in-process with the same
GSRM configuration, so the server is checked against the library, not against copied numbers.
The one ``slow`` test uses the default LM.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

pytest.importorskip("fastapi")
uvicorn = pytest.importorskip("uvicorn")

from gsrm.backends import Backend, BackendError, Generation, SentenceBackend
from gsrm.judges import JudgeError, LexicalJudge
from gsrm.model import GSRM
from gsrm.prompts import SYSTEM_PROMPT
from server.app import create_app, main
from server.protocol import (
    ChatCompletionResponse,
    GetRewardResponse,
    RewardsResponse,
    ScoreResponse,
)
from server.settings import Settings, build_parser, parse_settings

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
TEACHER = json.loads((EXAMPLES / "teacher_steps.json").read_text())
ALIGNED = json.loads((EXAMPLES / "student_aligned_steps.json").read_text())
MISALIGNED = json.loads((EXAMPLES / "student_misaligned_steps.json").read_text())
RAW_TEACHER = json.loads((EXAMPLES / "teacher.json").read_text())["reasoning"]
RAW_STUDENT = json.loads((EXAMPLES / "student_aligned.json").read_text())["reasoning"]
PROBLEM = TEACHER["problem"]
MODEL = "gsrm-test"


# --------------------------------------------------------------------------- fakes
class FakeChatBackend(Backend):
    """A chat 'model' whose reply is always REPLY; records every generate() call."""

    name = "fake-chat"
    REPLY = ("[Meta-reasoning 1]: Add first.\n[Sub-problem 1]: What is 2+3?\n[Answer 1]: 5\n"
             "So the final answer is: 5")

    def __init__(self, **kw: Any) -> None:
        kw.setdefault("shots", 0)
        super().__init__(**kw)
        self.calls: list[tuple[list[list[dict[str, str]]], int | None]] = []

    @property
    def model_id(self) -> str:
        return "fake-chat-model"

    def generate(self, conversations: Sequence[list[dict[str, str]]],
                 max_new_tokens: int | None = None) -> list[Generation]:
        self.calls.append(([list(c) for c in conversations], max_new_tokens))
        return [Generation(text=self.REPLY, completion_tokens=11,
                           prompt_tokens=sum(len(m["content"].split()) for m in c))
                for c in conversations]


class GatedBackend(Backend):
    """Sentence decompositions; records each batch, waits on ``gate``, fails on request."""

    name = "gated"

    def __init__(self) -> None:
        super().__init__(shots=0)
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()
        self.batches: list[list[tuple[str, str]]] = []
        self.fail_if: Callable[[list[tuple[str, str]]], bool] = lambda items: False

    def generate(self, conversations: Any, max_new_tokens: Any = None) -> list[Generation]:
        raise BackendError("no chat model")

    def decompose_many(self, items: Sequence[tuple[str, str]]) -> list[Generation]:
        self.batches.append(list(items))
        self.entered.set()
        if not self.gate.wait(20):
            raise BackendError("test gate never opened")
        if self.fail_if(list(items)):
            raise BackendError("GPU on fire")
        return SentenceBackend().decompose_many(items)


class BrokenJudge(LexicalJudge):
    name = "lexical"  # passes the options.judge check; fails when asked for a verdict

    def _text_verdicts(self, pairs: Any, kind: Any) -> Any:
        raise JudgeError("judge endpoint unreachable")


def fast_gsrm(backend: Backend | None = None, judge: Any = None) -> GSRM:
    return GSRM(backend=backend or SentenceBackend(), judge=judge or LexicalJudge())


# --------------------------------------------------------------------------- live server
@dataclass
class Live:
    url: str
    server: Any
    gsrm: GSRM
    thread: threading.Thread | None = None

    def post(self, path: str, body: Any = None, **kw: Any) -> httpx.Response:
        # generous: the default model's decompositions take tens of seconds on a busy CPU
        return httpx.post(self.url + path, json=body, timeout=kw.pop("timeout", 180), **kw)

    def get(self, path: str, **kw: Any) -> httpx.Response:
        return httpx.get(self.url + path, timeout=30, **kw)


@contextmanager
def live_server(gsrm: GSRM | None = None, grace: float = 5, **overrides: Any) -> Iterator[Live]:
    """Run create_app(Settings(**overrides), gsrm) under uvicorn on 127.0.0.1, a free port.

    ``grace`` is the graceful shutdown timeout, given to both uvicorn and the settings, as
    ``gsrm-serve`` does.
    """
    overrides = {"backend": "sentences", "judge": "lexical", "served_model_name": MODEL,
                 "graceful_timeout_s": grace, **overrides}
    gsrm = gsrm or fast_gsrm()
    app = create_app(Settings(**overrides), gsrm=gsrm)
    config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning",
                            timeout_graceful_shutdown=grace)  # type: ignore[arg-type]
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "server did not start"
        time.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield Live(f"http://127.0.0.1:{port}", server, gsrm, thread)
    finally:
        server.should_exit = True
        thread.join(15)


def wait_until(cond: Callable[[], bool], timeout: float = 10.0) -> None:
    end = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < end, "condition not reached in time"
        time.sleep(0.01)


def wait_ready(srv: Live) -> None:
    wait_until(lambda: srv.get("/health").json()["status"] == "ready")


@pytest.fixture(scope="module")
def srv() -> Iterator[Live]:
    with live_server() as s:
        wait_ready(s)
        yield s


@pytest.fixture(scope="module")
def chat_srv() -> Iterator[Live]:
    with live_server(fast_gsrm(FakeChatBackend(max_new_tokens=64)), max_new_tokens=64) as s:
        wait_ready(s)
        yield s


def expected(problem: str, teacher: Any, student: Any, mode: str = "paper") -> Any:
    """The in-process result for the same input and GSRM configuration."""
    return GSRM(backend=SentenceBackend(), judge=LexicalJudge(), mode=mode).score(
        problem, teacher, student)


def error_of(r: httpx.Response) -> dict[str, Any]:
    body = r.json()
    assert set(body) == {"error"}, body  # one error body, and nothing that looks like a reward
    assert set(body["error"]) == {"message", "type", "param", "code"}
    return body["error"]


# --------------------------------------------------------------------------- official client
def test_openai_client_lists_the_model(srv: Live) -> None:
    from openai import OpenAI

    client = OpenAI(base_url=srv.url + "/v1", api_key="unused", max_retries=0)
    models = client.models.list()
    assert [m.id for m in models.data] == [MODEL]
    assert models.data[0].owned_by == "gsrm"


def test_openai_client_chat_builds_the_canonical_prompt(chat_srv: Live) -> None:
    from openai import OpenAI

    backend = chat_srv.gsrm.backend
    assert isinstance(backend, FakeChatBackend)
    backend.calls.clear()
    client = OpenAI(base_url=chat_srv.url + "/v1", api_key="unused", max_retries=0)
    user = "Problem:\n2+3?\n\nReasoning to decompose:\nAdd 2 and 3 to get 5."
    resp = client.chat.completions.create(model=MODEL, max_tokens=32,
                                          messages=[{"role": "user", "content": user}])
    assert resp.choices[0].message.content == FakeChatBackend.REPLY
    assert resp.choices[0].finish_reason == "stop" and resp.model == MODEL
    # the server wrapped the message in the canonical prompt, exactly as the library builds it
    conversation, limit = backend.calls[-1][0][0], backend.calls[-1][1]
    assert conversation == backend.fit("2+3?", "Add 2 and 3 to get 5.")[0]
    assert conversation[0]["content"] == SYSTEM_PROMPT and limit == 32
    words = sum(len(m["content"].split()) for m in conversation)
    assert resp.usage is not None
    assert (resp.usage.prompt_tokens, resp.usage.completion_tokens) == (words, 11)
    assert resp.usage.total_tokens == words + 11


def test_chat_passes_a_full_conversation_through_and_caps_max_tokens(chat_srv: Live) -> None:
    backend = chat_srv.gsrm.backend
    messages = [{"role": "system", "content": "Decompose."},
                {"role": "user", "content": [{"type": "text", "text": "2+3 = 5."}]}]
    r = chat_srv.post("/v1/chat/completions", {"model": MODEL, "messages": messages,
                                               "max_tokens": 10_000, "temperature": 0.7})
    assert r.status_code == 200, r.text
    body = ChatCompletionResponse.model_validate(r.json())
    assert body.gsrm.prompt_built is False
    # sent as given (content parts joined); max_tokens capped at the server's max_new_tokens
    assert backend.calls[-1] == ([[{"role": "system", "content": "Decompose."},
                                   {"role": "user", "content": "2+3 = 5."}]], 64)


@pytest.mark.parametrize("body, status, param", [
    # streaming is not offered: the reply is one piece
    ({"stream": True}, 400, "stream"),
    # greedy decoding: n > 1 would repeat the same choice
    ({"n": 2}, 400, "n"),
    # no user message: nothing to decompose
    ({"messages": [{"role": "system", "content": "x"}]}, 400, "messages"),
    # wrong model name: a trainer pointed at the wrong server must notice
    ({"model": "gpt-4o"}, 404, "model"),
    # schema: messages missing
    ({"messages": None}, 422, "messages"),
])
def test_chat_errors(chat_srv: Live, body: dict[str, Any], status: int, param: str) -> None:
    req = {"model": MODEL, "messages": [{"role": "user", "content": "2+3 = 5."}], **body}
    req = {k: v for k, v in req.items() if v is not None}
    r = chat_srv.post("/v1/chat/completions", req)
    assert r.status_code == status and error_of(r)["param"] == param


def test_chat_on_the_sentences_backend_is_a_clear_501(srv: Live) -> None:
    from openai import APIStatusError, OpenAI

    client = OpenAI(base_url=srv.url + "/v1", api_key="unused", max_retries=0)
    with pytest.raises(APIStatusError) as info:
        client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "x"}])
    assert info.value.status_code == 501
    assert "no chat model" in info.value.message


# --------------------------------------------------------------------------- health, models, metrics
def test_health_reports_ready_model_and_queue(srv: Live) -> None:
    r = srv.get("/health")
    assert r.status_code == 200
    assert r.json() == {"status": "ready", "model": MODEL, "backend": "sentences",
                        "judge": "lexical", "queue_depth": 0, "in_flight": 0, "error": None}


def test_models_endpoint_shape(srv: Live) -> None:
    data = srv.get("/v1/models").json()["data"]
    assert len(data) == 1 and data[0]["id"] == MODEL and data[0]["object"] == "model"
    assert data[0]["root"] == "rule-based"


def test_load_benchmark_counts_the_servers_batches(srv: Live) -> None:
    # benchmarks/load.py reports each level's worker batches from this metric: one request,
    # one batch (a group split over several would show more)
    import asyncio

    from benchmarks.load import server_batches

    async def count() -> int:
        async with httpx.AsyncClient(timeout=30) as client:
            return await server_batches(client, srv.url)

    before = asyncio.run(count())
    srv.post("/v1/rewards", {"items": [{"problem": "b", "teacher": "A = 1. B = 2.",
                                        "student": "B = 2."}]}).raise_for_status()
    assert asyncio.run(count()) == before + 1


def test_metrics_count_requests_batches_and_cache(srv: Live) -> None:
    srv.post("/v1/rewards", {"items": [{"problem": "m", "teacher": "A = 1. B = 2.",
                                        "student": "A = 1."}] * 2})
    text = srv.get("/metrics").text
    assert 'gsrm_requests_total{endpoint="/v1/rewards",status="200"}' in text
    for name in ("gsrm_request_duration_seconds_bucket", "gsrm_batch_items_bucket",
                 "gsrm_batch_requests_bucket", "gsrm_decomposition_cache_hits_total",
                 "gsrm_decompositions_total", "gsrm_queue_depth", "gsrm_pairs_scored_total"):
        assert name in text
    # a rule backend has no engine to restart: the gauge reads 0, it does not vanish
    assert "gsrm_engine_restarts 0.0" in text
    assert 'gsrm_requests_total{endpoint="other",status="404"}' not in text
    srv.get("/no/such/path")
    assert 'gsrm_requests_total{endpoint="other",status="404"} 1.0' in srv.get("/metrics").text


# --------------------------------------------------------------------------- /v1/rewards
def test_rewards_pre_structured_exact(srv: Live) -> None:
    r = srv.post("/v1/rewards", {"model": MODEL, "items": [
        {"problem": PROBLEM, "teacher": TEACHER["steps"], "student": ALIGNED["steps"]},
        {"problem": PROBLEM, "teacher": TEACHER["steps"], "student": MISALIGNED["steps"]},
        {"problem": PROBLEM, "teacher": TEACHER["steps"], "student": TEACHER["steps"]}]})
    assert r.status_code == 200, r.text
    body = RewardsResponse.model_validate(r.json())
    assert body.model == MODEL and body.object == "list" and body.id.startswith("rwd-")
    assert [d.index for d in body.data] == [0, 1, 2]
    for d, student in zip(body.data, (ALIGNED, MISALIGNED, TEACHER)):
        want = expected(PROBLEM, TEACHER["steps"], student["steps"])
        assert (d.reward, d.step_rewards) == (want.reward, want.step_rewards)
        assert (d.teacher_steps, d.student_steps) == (4, len(student["steps"]))
        assert d.mode == "paper" and not d.truncated and d.teacher is None
    # identical steps: every step matches fully
    assert body.data[2].step_rewards == [1.0, 1.0, 1.0, 1.0] and body.data[2].reward == 4.0
    # no generation for pre-structured sides
    assert body.usage.model_dump() == {"prompt_tokens": 0, "completion_tokens": 0,
                                       "total_tokens": 0, "pairs": 3, "decompositions": 0,
                                       "cached_decompositions": 0}


@pytest.mark.parametrize("options, field", [
    # normalized: the step-reward sum over the teacher's step count
    ({"mode": "normalized"}, "normalized_reward"),
    # the coverage term added on top of the paper reward
    ({"coverage": True}, None),
])
def test_rewards_options_change_the_reward(srv: Live, options: dict[str, Any],
                                            field: str | None) -> None:
    r = srv.post("/v1/rewards", {"items": [{"problem": PROBLEM, "teacher": TEACHER["steps"],
                                            "student": ALIGNED["steps"][:3]}],
                                 "options": options})
    d = r.json()["data"][0]
    want = expected(PROBLEM, TEACHER["steps"], ALIGNED["steps"][:3])
    if field:
        assert d["reward"] == getattr(want, field) and d["mode"] == "normalized"
    else:
        assert d["reward"] == want.reward + want.coverage == sum(want.step_rewards) + 0.75


def test_rewards_raw_text_and_details(srv: Live) -> None:
    r = srv.post("/v1/rewards", {"items": [{"problem": PROBLEM, "teacher": RAW_TEACHER,
                                            "student": "<think>" + RAW_STUDENT + "</think>$25"}],
                                 "options": {"details": True}})
    d = r.json()["data"][0]
    want = expected(PROBLEM, RAW_TEACHER, RAW_STUDENT)
    assert d["reward"] == want.reward and d["step_rewards"] == want.step_rewards
    assert d["teacher"]["steps"] == [s.model_dump(mode="json") for s in want.teacher.steps]
    assert len(d["verdicts"]) == min(want.teacher.n_steps, want.student.n_steps)


def test_empty_student_is_a_scored_zero_not_an_error(srv: Live) -> None:
    # blank text, think tags with nothing in them (issue 17 row 1: the model used to invent
    # steps for it), and an empty step list: each a scored 0, the text ones with the library's
    # empty-reasoning warning
    from gsrm.validation import EMPTY_REASONING

    students: list[Any] = ["  ", "<think></think>", "<think> </think> 5", []]
    r = srv.post("/v1/rewards", {"items": [{"teacher": RAW_TEACHER, "student": s}
                                           for s in students]})
    assert r.status_code == 200
    for d in r.json()["data"]:
        assert (d["reward"], d["student_steps"], d["step_rewards"]) == (0.0, 0, [])
    for d in r.json()["data"][:3]:
        assert f"student: {EMPTY_REASONING}" in d["warnings"]


# --------------------------------------------------------------------------- /score, /get_reward
@pytest.mark.parametrize("path", ["/score", "/v1/score"])
def test_score_vllm_shape(srv: Live, path: str) -> None:
    students = [RAW_STUDENT, RAW_TEACHER, "Nothing to see here."]
    r = srv.post(path, {"model": MODEL, "problem": PROBLEM, "text_1": RAW_TEACHER,
                        "text_2": students})
    assert r.status_code == 200, r.text
    body = ScoreResponse.model_validate(r.json())
    assert body.object == "list" and body.model == MODEL
    assert [(d.index, d.object) for d in body.data] == [(0, "score"), (1, "score"), (2, "score")]
    assert [d.score for d in body.data] == [expected(PROBLEM, RAW_TEACHER, s).reward
                                            for s in students]


def test_score_pairwise_lists(srv: Live) -> None:
    r = srv.post("/score", {"text_1": ["A = 1.", "B = 2."], "text_2": ["A = 1.", "C = 3."],
                            "options": {"mode": "normalized"}})
    assert [d["score"] for d in r.json()["data"]] == [1.0, 0.0]


def test_get_reward_openrlhf_shape(srv: Live) -> None:
    prompt = ("<|im_start|>system\nThink step by step.<|im_end|>\n<|im_start|>user\n"
              f"{PROBLEM}<|im_end|>\n<|im_start|>assistant\n")
    responses = [f"<think>{RAW_STUDENT}</think> The answer is $25.<|im_end|>",
                 "<think>I will guess.</think> $30<|im_end|>"]
    r = srv.post("/get_reward", {"query": [prompt + x for x in responses],
                                 "prompts": [prompt, prompt],
                                 "labels": [RAW_TEACHER, {"problem": PROBLEM,
                                                          "steps": TEACHER["steps"]}]})
    assert r.status_code == 200, r.text
    body = GetRewardResponse.model_validate(r.json())
    want = [expected(PROBLEM, RAW_TEACHER, RAW_STUDENT),
            expected(PROBLEM, TEACHER["steps"], "I will guess.")]
    assert body.rewards == [w.reward for w in want]
    assert body.scores == [w.normalized_reward for w in want]
    assert body.extra_logs["gsrm_teacher_steps"] == [float(w.teacher.n_steps) for w in want]
    assert {len(v) for v in body.extra_logs.values()} == {2}


def test_get_reward_without_prompts_finds_the_assistant_turn(srv: Live) -> None:
    q = f"<|im_start|>user\n{PROBLEM}<|im_end|>\n<|im_start|>assistant\n{RAW_STUDENT}<|im_end|>"
    r = srv.post("/get_reward", {"query": [q], "labels": [RAW_TEACHER]})
    assert r.json()["rewards"] == [expected("", RAW_TEACHER, RAW_STUDENT).reward]


# --------------------------------------------------------------------------- validation 400 / 404 / 422
@pytest.mark.parametrize("path, body, status, param", [
    # the JSON itself is broken: 400, not a schema error
    ("/v1/rewards", b'{"items": [', 400, None),
    # no items at all
    ("/v1/rewards", {"items": []}, 422, "items"),
    # a pair without its teacher
    ("/v1/rewards", {"items": [{"student": "x"}]}, 422, "items[0].teacher"),
    # a blank teacher is a client bug, not a scored 0
    ("/v1/rewards", {"items": [{"teacher": " ", "student": "x"}]}, 422, "items[0].teacher"),
    # a step with a field the contract does not have
    ("/v1/rewards", {"items": [{"teacher": [{"meta": "m", "why": "?"}], "student": "x"}]}, 422,
     "items[0].teacher[0].why"),
    # wrong type for a side
    ("/v1/rewards", {"items": [{"teacher": 5, "student": "x"}]}, 422, "items[0].teacher"),
    # unknown reward mode
    ("/v1/rewards", {"items": [{"teacher": "a", "student": "b"}], "options": {"mode": "max"}},
     422, "options.mode"),
    # a server scores with one judge; asking for another is refused, not ignored
    ("/v1/rewards", {"items": [{"teacher": "a", "student": "b"}], "options": {"judge": "llm"}},
     400, "options.judge"),
    # the request names a model this server does not serve
    ("/v1/rewards", {"model": "other", "items": [{"teacher": "a", "student": "b"}]}, 404,
     "model"),
    # an unpaired surrogate cannot be hashed or tokenized
    ("/v1/rewards", b'{"items": [{"teacher": "\\ud800", "student": "b"}]}', 422,
     "items[0].teacher"),
    # issue 17 row 2: a teacher with think tags only, or only an answer after </think>, holds
    # no reasoning: nothing to distil, a 422 like "" (was: 200 with reward 0.0)
    ("/v1/rewards", {"items": [{"teacher": "<think></think>", "student": "x"}]}, 422,
     "items[0].teacher"),
    ("/v1/rewards", {"items": [{"teacher": "</think> x", "student": "x"}]}, 422,
     "items[0].teacher"),
    ("/score", {"text_1": "<think> </think>", "text_2": "x"}, 422, "text_1"),
    ("/score", {"text_1": ["a", "</think> 5"], "text_2": ["x", "y"]}, 422, "text_1"),
    ("/get_reward", {"query": ["q"], "labels": ["<think></think>"]}, 422, "labels[0]"),
    ("/get_reward", {"query": ["q"], "labels": [{"reasoning": "</think> 5"}]}, 422,
     "labels[0].reasoning"),
    ("/get_reward", {"query": ["q"], "labels": [{"steps": []}]}, 422, "labels[0].steps"),
    # pairwise lists of different lengths
    ("/score", {"text_1": ["a", "b"], "text_2": ["c", "d", "e"]}, 400, "text_1"),
    # no students
    ("/score", {"text_1": "a", "text_2": []}, 422, "text_2"),
    # OpenRLHF started without --label_key: no teacher to compare with
    ("/get_reward", {"query": ["q"]}, 422, "labels"),
    # one label for two queries
    ("/get_reward", {"query": ["q", "r"], "labels": ["t"]}, 400, "labels"),
    # prompts that do not line up with the queries
    ("/get_reward", {"query": ["q"], "labels": ["t"], "prompts": ["a", "b"]}, 400, "prompts"),
])
def test_validation_errors(srv: Live, path: str, body: Any, status: int,
                           param: str | None) -> None:
    if isinstance(body, bytes):
        r = httpx.post(srv.url + path, content=body, headers={"content-type": "application/json"})
    else:
        r = srv.post(path, body)
    assert r.status_code == status, r.text
    err = error_of(r)
    assert err["param"] == param
    assert err["type"] == ("not_found_error" if status == 404 else "invalid_request_error")


def test_unknown_path_and_method(srv: Live) -> None:
    assert error_of(srv.get("/v2/nothing"))["code"] == "not_found"
    assert srv.get("/v1/rewards").status_code == 405


# --------------------------------------------------------------------------- limits 413
LIMITS = {"max_body_bytes": 20_000, "max_items": 3, "max_reasoning_chars": 200, "max_steps": 4}


@pytest.fixture(scope="module")
def small() -> Iterator[Live]:
    with live_server(**LIMITS) as s:
        wait_ready(s)
        yield s


def _step(i: int, n: int = 10) -> dict[str, str]:
    return {"meta": "m" * n, "subproblem": f"q{i}", "answer": str(i)}


@pytest.mark.parametrize("path, body, code, param", [
    # more pairs than max_items=3
    ("/v1/rewards", {"items": [{"teacher": "a", "student": "b"}] * 4}, "too_many_items", "items"),
    # a raw teacher longer than max_reasoning_chars=200
    ("/v1/rewards", {"items": [{"teacher": "x" * 201, "student": "b"}]}, "reasoning_too_long",
     "items[0].teacher"),
    # a step list longer than max_steps=4
    ("/v1/rewards", {"items": [{"teacher": "a", "student": [_step(i) for i in range(5)]}]},
     "too_many_steps", "items[0].student"),
    # few steps, but more characters than max_reasoning_chars in total
    ("/v1/rewards", {"items": [{"teacher": [_step(i, 90) for i in range(3)], "student": "b"}]},
     "reasoning_too_long", "items[0].teacher"),
    # an over-long problem statement
    ("/v1/rewards", {"items": [{"problem": "p" * 300, "teacher": "a", "student": "b"}]},
     "reasoning_too_long", "items[0].problem"),
    # four students in the vLLM shape
    ("/score", {"text_1": "a", "text_2": ["b"] * 4}, "too_many_items", "text_2"),
    # four queries in the OpenRLHF shape
    ("/get_reward", {"query": ["q"] * 4, "labels": ["t"] * 4}, "too_many_items", "query"),
    # a body over max_body_bytes, refused before it is parsed
    ("/v1/rewards", {"items": [{"teacher": "a", "student": "b" * 30_000}]}, "payload_too_large",
     None),
])
def test_limits_give_413(small: Live, path: str, body: Any, code: str, param: str | None) -> None:
    r = small.post(path, body)
    assert r.status_code == 413, r.text
    err = error_of(r)
    assert (err["code"], err["param"]) == (code, param)


def test_chunked_body_over_the_limit_gives_413(small: Live) -> None:
    chunk = b" " * 8192

    def body() -> Iterator[bytes]:  # no Content-Length: the server must count
        yield b'{"items": [{"teacher": "a", "student": "b"}]'
        for _ in range(4):
            yield chunk
        yield b"}"

    r = httpx.post(small.url + "/v1/rewards", content=body(),
                   headers={"content-type": "application/json"})
    assert r.status_code == 413 and error_of(r)["code"] == "payload_too_large"


def test_truncation_only_when_asked_and_flagged(small: Live) -> None:
    long_text = "Add 2 and 3 = 5. " * 20  # 340 characters
    steps = [_step(i) for i in range(6)]
    r = small.post("/v1/rewards", {"items": [{"teacher": long_text, "student": steps}],
                                   "options": {"truncate": True}})
    assert r.status_code == 200, r.text
    d = r.json()["data"][0]
    assert d["truncated"] is True and d["student_steps"] == 4
    assert d["warnings"][:2] == ["items[0].teacher: cut from 340 to 200 characters by the server",
                                 "items[0].student: cut from 6 to 4 steps by the server"]
    want = expected("", long_text[:200], steps[:4])
    assert d["reward"] == want.reward and d["teacher_steps"] == want.teacher.n_steps
    # within the limits nothing is cut and nothing is flagged
    ok = small.post("/v1/rewards", {"items": [{"teacher": "a = 1.", "student": "a = 1."}],
                                    "options": {"truncate": True}}).json()["data"][0]
    assert ok["truncated"] is False


def test_score_shape_flags_truncation_too(small: Live) -> None:
    long_text = "Add 2 and 3 = 5. " * 20  # 340 characters, over max_reasoning_chars=200
    assert small.post("/score", {"text_1": "a = 1.", "text_2": long_text}).status_code == 413
    r = small.post("/score", {"text_1": "a = 1.", "text_2": [long_text, "a = 1."],
                              "options": {"truncate": True}})
    assert r.status_code == 200, r.text
    ScoreResponse.model_validate(r.json())
    d = r.json()["data"]
    assert [x["truncated"] for x in d] == [True, False]
    assert d[0]["warnings"][0] == "text_2[0]: cut from 340 to 200 characters by the server"
    assert d[0]["score"] == expected("", "a = 1.", long_text[:200]).reward


def test_server_wide_truncate_default_applies_to_openrlhf() -> None:
    with live_server(**{**LIMITS, "truncate": True}) as s:
        r = s.post("/get_reward", {"query": ["x" * 500], "labels": ["A = 1."]})
    assert r.status_code == 200 and r.json()["extra_logs"]["gsrm_truncated"] == [1.0]


# --------------------------------------------------------------------------- auth 401
@pytest.fixture(scope="module")
def keyed() -> Iterator[Live]:
    with live_server(api_key="s3cret") as s:
        wait_ready(s)
        yield s


@pytest.mark.parametrize("path, header, status", [
    # no Authorization header
    ("/v1/models", None, 401),
    # the wrong key
    ("/v1/models", "Bearer wrong", 401),
    # the right key in another scheme
    ("/v1/models", "Basic s3cret", 401),
    # the right key
    ("/v1/models", "Bearer s3cret", 200),
    # the scheme is case-insensitive (RFC 7235)
    ("/v1/models", "bearer s3cret", 200),
    # probes and scrapers do not need the key
    ("/health", None, 200),
    ("/metrics", None, 200),
])
def test_auth(keyed: Live, path: str, header: str | None, status: int) -> None:
    headers = {"Authorization": header} if header else {}
    r = keyed.get(path, headers=headers)
    assert r.status_code == status
    if status == 401:
        assert error_of(r)["type"] == "authentication_error"
        assert r.headers["WWW-Authenticate"] == "Bearer"


def test_auth_is_checked_before_the_body(keyed: Live) -> None:
    r = httpx.post(keyed.url + "/v1/rewards", content=b"not json at all")
    assert r.status_code == 401


def test_auth_with_the_openai_client(keyed: Live) -> None:
    from openai import AuthenticationError, OpenAI

    good = OpenAI(base_url=keyed.url + "/v1", api_key="s3cret", max_retries=0)
    assert [m.id for m in good.models.list().data] == [MODEL]
    bad = OpenAI(base_url=keyed.url + "/v1", api_key="nope", max_retries=0)
    with pytest.raises(AuthenticationError):
        bad.models.list()


# --------------------------------------------------------------------------- batching and caching
def _raw(i: int) -> dict[str, Any]:
    return {"problem": "p", "teacher": RAW_TEACHER, "student": f"Step {i}: {i} + 1 = {i + 1}."}


def test_teacher_decomposed_once_for_a_group() -> None:
    backend = GatedBackend()
    with live_server(fast_gsrm(backend)) as s:
        r = s.post("/v1/rewards", {"items": [_raw(i) for i in range(4)]})
        assert r.status_code == 200
        assert len(backend.batches) == 1 and len(backend.batches[0]) == 5
        assert [t for _, t in backend.batches[0]].count(RAW_TEACHER) == 1
        assert r.json()["usage"]["decompositions"] == 5
        # the next group with the same teacher decomposes only its new student
        r2 = s.post("/v1/rewards", {"items": [_raw(9)]})
        assert backend.batches[1] == [("p", "Step 9: 9 + 1 = 10.")]
        assert r2.json()["usage"]["cached_decompositions"] == 1


def test_concurrent_requests_share_one_backend_batch() -> None:
    backend = GatedBackend()
    with live_server(fast_gsrm(backend), batch_window_ms=0) as s, ThreadPoolExecutor(8) as pool:
        wait_ready(s)
        backend.gate.clear()
        first = pool.submit(s.post, "/v1/rewards", {"items": [_raw(0)]})
        assert backend.entered.wait(10)  # the worker is busy with the first request
        rest = [pool.submit(s.post, "/v1/rewards", {"items": [_raw(i)]}) for i in (1, 2, 3, 4)]
        wait_until(lambda: s.get("/health").json()["queue_depth"] == 4)
        backend.gate.set()
        assert first.result().status_code == 200
        assert all(f.result().status_code == 200 for f in rest)
        # batch 2 holds all four queued requests' students (the teacher is cached by then)
        assert len(backend.batches) == 2
        assert sorted(t for _, t in backend.batches[1]) == [f"Step {i}: {i} + 1 = {i + 1}."
                                                            for i in (1, 2, 3, 4)]
        assert "gsrm_batch_requests_bucket{le=\"4.0\"} 2.0" in s.get("/metrics").text


def test_a_lone_request_does_not_wait_out_the_batch_window() -> None:
    # the window only pays off while other requests are arriving; alone, it is pure latency
    with live_server(batch_window_ms=3000) as s:
        wait_ready(s)
        t0 = time.monotonic()
        assert s.post("/v1/rewards", {"items": [_raw(0)]}).status_code == 200
        assert time.monotonic() - t0 < 1.5


def test_queue_full_gives_503_with_retry_after() -> None:
    backend = GatedBackend()
    with live_server(fast_gsrm(backend), max_batch=1, max_queue=2, max_items=2,
                     batch_window_ms=0, retry_after_s=3) as s, ThreadPoolExecutor(4) as pool:
        wait_ready(s)
        backend.gate.clear()
        first = pool.submit(s.post, "/v1/rewards", {"items": [_raw(0)]})
        assert backend.entered.wait(10)
        queued = [pool.submit(s.post, "/v1/rewards", {"items": [_raw(i)]}) for i in (1, 2)]
        wait_until(lambda: s.get("/health").json()["queue_depth"] == 2)
        r = s.post("/v1/rewards", {"items": [_raw(3)]})
        assert r.status_code == 503 and r.headers["Retry-After"] == "3"
        assert error_of(r)["code"] == "queue_full"
        backend.gate.set()
        assert [f.result().status_code for f in [first, *queued]] == [200, 200, 200]


def test_timeout_gives_504_and_the_server_recovers() -> None:
    backend = GatedBackend()
    with live_server(fast_gsrm(backend), request_timeout_s=0.3) as s:
        wait_ready(s)
        backend.gate.clear()
        r = s.post("/v1/rewards", {"items": [_raw(0)]})
        assert r.status_code == 504 and error_of(r)["type"] == "timeout_error"
        backend.gate.set()
        wait_until(lambda: s.get("/health").json()["in_flight"] == 0)
        assert s.post("/v1/rewards", {"items": [_raw(1)]}).status_code == 200


@pytest.mark.parametrize("path, body", [
    ("/v1/rewards", {"items": [_raw(0)]}),
    ("/score", {"text_1": RAW_TEACHER, "text_2": "2 + 2 = 4."}),
    ("/get_reward", {"query": ["2 + 2 = 4."], "labels": [RAW_TEACHER]}),
])
def test_backend_failure_is_a_500_never_a_reward(path: str, body: dict[str, Any]) -> None:
    backend = GatedBackend()
    backend.fail_if = lambda items: True
    with live_server(fast_gsrm(backend)) as s:
        r = s.post(path, body)
    assert r.status_code == 500
    err = error_of(r)  # the body holds the error and nothing else: no data, rewards, scores
    assert err["type"] == "backend_error" and "GPU on fire" in err["message"]


def test_judge_failure_is_a_500() -> None:
    with live_server(fast_gsrm(judge=BrokenJudge())) as s:
        r = s.post("/v1/rewards", {"items": [{"teacher": [{"meta": "a b"}],
                                              "student": [{"meta": "a c"}]}]})
    assert r.status_code == 500 and error_of(r)["type"] == "judge_error"


def test_a_failing_request_does_not_fail_its_batch_neighbours() -> None:
    backend = GatedBackend()
    backend.fail_if = lambda items: any("POISON" in t for _, t in items)
    with live_server(fast_gsrm(backend), batch_window_ms=0) as s, ThreadPoolExecutor(4) as pool:
        wait_ready(s)
        backend.gate.clear()
        first = pool.submit(s.post, "/v1/rewards", {"items": [_raw(0)]})
        assert backend.entered.wait(10)
        good = pool.submit(s.post, "/v1/rewards", {"items": [_raw(1)]})
        bad = pool.submit(s.post, "/v1/rewards", {"items": [{"teacher": "POISON = 1.",
                                                              "student": "x = 2."}]})
        wait_until(lambda: s.get("/health").json()["queue_depth"] == 2)
        backend.gate.set()
        assert first.result().status_code == 200 and good.result().status_code == 200
        assert bad.result().status_code == 500


# --------------------------------------------------------------------------- lifecycle
class SlowLoadingBackend(SentenceBackend):
    def __init__(self, fail: bool = False) -> None:
        super().__init__()
        self.loaded = threading.Event()
        self.fail = fail

    def load(self) -> None:
        if not self.loaded.wait(20):
            raise BackendError("never loaded")
        if self.fail:
            raise BackendError("weights are corrupt")


def test_health_says_loading_and_requests_wait_for_the_model() -> None:
    backend = SlowLoadingBackend()
    with live_server(fast_gsrm(backend)) as s, ThreadPoolExecutor(2) as pool:
        r = s.get("/health")
        assert r.status_code == 503 and r.json()["status"] == "loading"
        pending = pool.submit(s.post, "/v1/rewards", {"items": [_raw(0)]})
        time.sleep(0.1)
        assert not pending.done()
        backend.loaded.set()
        assert pending.result().status_code == 200
        assert s.get("/health").json()["status"] == "ready"


def test_health_reports_a_failed_load() -> None:
    backend = SlowLoadingBackend(fail=True)
    backend.loaded.set()
    with live_server(fast_gsrm(backend)) as s:
        wait_until(lambda: s.get("/health").json()["status"] == "failed")
        body = s.get("/health").json()
    assert body["error"] == "BackendError: weights are corrupt"


class BrokenWeightsBackend(SentenceBackend):
    """Like the transformers backend with missing weights: every use tries to load, and fails."""

    def load(self) -> None:
        raise BackendError("weights are corrupt")

    def decompose_many(self, items: Any) -> list[Generation]:
        self.load()
        return super().decompose_many(items)


def test_after_a_failed_load_requests_are_errors_never_rewards() -> None:
    with live_server(fast_gsrm(BrokenWeightsBackend())) as s:
        wait_until(lambda: s.get("/health").json()["status"] == "failed")
        r = s.post("/v1/rewards", {"items": [_raw(0)]})  # needs the backend
        assert r.status_code == 500 and error_of(r)["type"] == "backend_error"
        r = s.post("/get_reward", {"query": ["2 + 2 = 4."], "labels": [RAW_TEACHER]})
        assert r.status_code == 500 and "rewards" not in r.json()
        # pre-structured steps need only the judge, which did load: they are still scored
        steps = TEACHER["steps"]
        ok = s.post("/v1/rewards", {"items": [{"teacher": steps, "student": steps}]})
        assert ok.status_code == 200
        assert ok.json()["data"][0]["reward"] == expected("", steps, steps).reward


def test_graceful_shutdown_lets_in_flight_requests_finish() -> None:
    backend = GatedBackend()
    with ThreadPoolExecutor(2) as pool:
        with live_server(fast_gsrm(backend), batch_window_ms=0) as s:
            wait_ready(s)
            backend.gate.clear()
            running = pool.submit(s.post, "/v1/rewards", {"items": [_raw(0)]})
            assert backend.entered.wait(10)
            # a second request waits in the queue behind the running one
            queued = pool.submit(s.post, "/v1/rewards", {"items": [_raw(1)]})
            wait_until(lambda: s.get("/health").json()["queue_depth"] == 1)
            s.server.should_exit = True  # like SIGTERM: stop accepting, drain in-flight
            threading.Timer(0.3, backend.gate.set).start()
        # both finished with their rewards: the running one and the queued one
        for i, fut in enumerate((running, queued)):
            r = fut.result()
            assert r.status_code == 200, r.text
            assert r.json()["data"][0]["student_steps"] >= 1, i
    # after the drain the listener is gone: new connections are refused, not half-served
    with pytest.raises(httpx.TransportError):
        s.get("/health")


def test_work_past_the_grace_gets_503_and_the_server_exits_within_the_grace() -> None:
    # issue 17 rows 4-5: work still running when the graceful timeout ends used to get a
    # plain-text "500 Internal Server Error" (uvicorn cancelled the request: CancelledError
    # traceback in the log), and the app's shutdown then waited for the batch a second grace
    grace = 2.0
    backend = GatedBackend()
    with ThreadPoolExecutor(2) as pool:
        try:
            with live_server(fast_gsrm(backend), grace=grace, batch_window_ms=0,
                             retry_after_s=2) as s:
                wait_ready(s)
                backend.gate.clear()  # the batch will outlive the grace
                running = pool.submit(s.post, "/v1/rewards", {"items": [_raw(0)]})
                assert backend.entered.wait(10)
                thread = s.thread
                assert thread is not None
                t0 = time.monotonic()
                s.server.should_exit = True  # like SIGTERM
            elapsed = time.monotonic() - t0
            assert not thread.is_alive()
            r = running.result(timeout=10)
        finally:
            backend.gate.set()
    assert r.status_code == 503 and r.headers["Retry-After"] == "2"
    err = error_of(r)
    assert (err["type"], err["code"]) == ("overloaded_error", "shutting_down")
    # within the grace (plus uvicorn's 0.1 s connection close and scheduling), not twice it
    assert elapsed < grace + 1.0, elapsed


_SLOW_SERVER = """
import sys, time
import server.service as service
from gsrm.backends import SentenceBackend
from gsrm.judges import LexicalJudge
from gsrm.model import GSRM

class Slow(SentenceBackend):
    def decompose_many(self, items):
        if any("SLOW" in r for _, r in items):
            time.sleep(60)  # a model batch far longer than the grace
        return super().decompose_many(items)

service.gsrm_from_settings = lambda settings: GSRM(backend=Slow(), judge=LexicalJudge())
from server.app import main
raise SystemExit(main(sys.argv[1:]))
"""


def test_gsrm_serve_process_answers_503_and_exits_within_the_grace_on_sigterm() -> None:
    """issue 17 rows 4-5 against the real entry point (uvicorn's signal handling, process exit):
    a batch running past --graceful-timeout-s gets the OpenAI-shaped 503, and the process
    exits within the grace instead of waiting for the model thread."""
    import os
    import signal
    import socket
    import subprocess
    import sys

    grace = 2.0
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen([sys.executable, "-c", _SLOW_SERVER, "--port", str(port),
                             "--graceful-timeout-s", str(grace), "--log-level", "warning"],
                            cwd=Path(__file__).resolve().parents[1], stderr=subprocess.PIPE,
                            env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])})
    try:
        def up() -> bool:
            try:
                return httpx.get(url + "/health").json()["status"] == "ready"
            except httpx.TransportError:
                assert proc.poll() is None, "gsrm-serve exited"
                return False
        wait_until(up, timeout=60)
        with ThreadPoolExecutor(1) as pool:
            slow = pool.submit(httpx.post, url + "/v1/rewards", timeout=30, json={
                "items": [{"teacher": "SLOW = 1.", "student": "x = 1."}]})
            wait_until(lambda: httpx.get(url + "/health").json()["in_flight"] == 1)
            t0 = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            r = slow.result(timeout=30)
            _, err = proc.communicate(timeout=30)
            elapsed = time.monotonic() - t0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    log = err.decode()
    assert r.status_code == 503, r.text
    assert r.json()["error"]["code"] == "shutting_down"
    assert "Traceback" not in log and "CancelledError" not in log, log[-2000:]
    assert elapsed < grace + 1.5, (elapsed, log[-2000:])


# --------------------------------------------------------------------------- settings / CLI
def test_every_setting_has_a_flag_an_env_var_and_help() -> None:
    text = build_parser().format_help()
    for name, field in Settings.model_fields.items():
        assert field.description, name
        assert "--" + name.replace("_", "-") in text, name
        assert "GSRM_" + name.upper() in text, name


@pytest.mark.parametrize("argv, env, field, value", [
    # defaults: loopback, the paper's reward
    ([], {}, "host", "127.0.0.1"),
    # an environment variable sets a field
    ([], {"GSRM_MAX_BATCH": "7"}, "max_batch", 7),
    # a flag wins over the environment
    (["--max-batch", "9"], {"GSRM_MAX_BATCH": "7"}, "max_batch", 9),
    # booleans have --x / --no-x
    (["--no-truncate"], {"GSRM_TRUNCATE": "true"}, "truncate", False),
    (["--coverage"], {}, "coverage", True),
])
def test_settings_sources(argv: list[str], env: dict[str, str], field: str, value: Any) -> None:
    assert getattr(parse_settings(argv, env=env), field) == value


def test_settings_build_the_gsrm_they_describe() -> None:
    """No weights load here: backends and judges load on first use."""
    from gsrm.spanformat import default_span_format
    from server.service import gsrm_from_settings

    g = gsrm_from_settings(Settings(backend="transformers", judge="lexical", gen_batch_size=4,
                                    max_new_tokens=99, threads=1, mode="normalized",
                                    cache_size=7))
    b = g.backend
    assert (b.name, b.batch_size, b.max_new_tokens, b.threads) == ("transformers", 4, 99, 1)
    assert (g.judge.name, g.mode, g.cache_size) == ("lexical", "normalized", 7)
    remote = gsrm_from_settings(Settings(backend="openai", backend_url="http://127.0.0.1:9/v1",
                                         model="m", judge="lexical"))
    assert remote.backend.model_id == "http://127.0.0.1:9/v1#m"
    assert remote.backend.span_format == "tags"  # a general model: the canonical format
    # the shipped default describer served merged is prompted in its format (auto: qa), and
    # any other by name: flag or GSRM_SPAN_FORMAT
    for argv, env, want in ((["--span-format", "auto"], {}, default_span_format()),
                            ([], {"GSRM_SPAN_FORMAT": "auto"}, "qa"),
                            ([], {"GSRM_SPAN_FORMAT": "pqa"}, "pqa")):
        served = gsrm_from_settings(parse_settings(
            ["--backend", "openai", "--backend-url", "http://127.0.0.1:9/v1", *argv], env=env))
        assert served.backend.span_format == want
    # the openvino backend's export and precision, from flags or GSRM_* env like the rest
    ov = gsrm_from_settings(parse_settings(["--backend", "openvino", "--ov-weights", "int8"],
                                           env={"GSRM_OV_PRECISION": "auto"}))
    assert (ov.backend.weights, ov.backend.precision) == ("int8", "auto")  # type: ignore[attr-defined]


@pytest.mark.parametrize("argv", [
    ["--max-batch", "0"],  # must be positive
    ["--backend", "nope"],  # not a registered backend
    ["--span-format", "nope"],  # not a registered describer format
    ["--max-items", "10", "--max-queue", "5"],  # a full request could never be queued
])
def test_bad_settings_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 2
    assert "gsrm-serve: error:" in capsys.readouterr().err


def test_gsrm_serve_process_reads_env_and_stops_on_sigterm() -> None:
    """The real entry point: settings from flags + GSRM_* env, uvicorn, clean SIGTERM."""
    import os
    import signal
    import socket
    import subprocess
    import sys

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {**os.environ, "GSRM_API_KEY": "from-env", "GSRM_SERVED_MODEL_NAME": "envmodel"}
    proc = subprocess.Popen([sys.executable, "-m", "server.app", "--port", str(port),
                             "--backend", "sentences", "--judge", "lexical"], env=env,
                            cwd=Path(__file__).resolve().parents[1], stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    try:
        def up() -> bool:
            try:
                return httpx.get(url + "/health").json()["status"] == "ready"
            except httpx.TransportError:
                assert proc.poll() is None, "gsrm-serve exited"
                return False
        wait_until(up, timeout=30)
        assert httpx.get(url + "/v1/models").status_code == 401
        models = httpx.get(url + "/v1/models", headers={"Authorization": "Bearer from-env"})
        assert models.json()["data"][0]["id"] == "envmodel"
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    # uvicorn re-raises the captured SIGTERM after its graceful shutdown (exit status -15)
    assert proc.returncode in (0, -signal.SIGTERM), err.decode()[-2000:]
    assert "Application shutdown complete" in err.decode()


def test_help_lists_every_flag() -> None:
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "server.app", "--help"], capture_output=True,
                         text=True, check=True, cwd=Path(__file__).resolve().parents[1]).stdout
    assert out.startswith("usage: gsrm-serve")
    flat = " ".join(out.split())  # argparse wraps help lines
    for n in Settings.model_fields:
        assert "--" + n.replace("_", "-") in out, n
        assert "env GSRM_" + n.upper() in flat, n


@pytest.mark.parametrize("module", ["server.settings", "server.errors", "server.protocol",
                                    "server.batcher", "server.metrics", "server.middleware",
                                    "server.service", "server.routes", "server.app"])
def test_docstring_examples_run(module: str) -> None:
    """server/ is outside pytest's doctest paths; its examples are run here."""
    import doctest
    import importlib

    result = doctest.testmod(importlib.import_module(module))
    assert result.failed == 0


# --------------------------------------------------------------------------- the real model
@pytest.mark.slow
def test_default_model_over_http() -> None:
    """The default LM (transformers backend) behind the server: rewards and chat."""
    from openai import OpenAI

    settings = {"backend": "transformers", "judge": "lexical", "max_new_tokens": 24,
                    "max_input_tokens": 6144}
    gsrm = GSRM.from_names(backend="transformers", judge="lexical",
                           backend_kwargs={"max_new_tokens": 24})
    with live_server(gsrm, **settings) as s:
        wait_until(lambda: s.get("/health").json()["status"] == "ready", timeout=300)
        r = s.post("/v1/rewards", {"items": [{"problem": "What is 2+3?",
                                              "teacher": "Add 2 and 3 to get 5.",
                                              "student": "2 plus 3 is 5."}]})
        assert r.status_code == 200, r.text
        d = r.json()["data"][0]
        assert d["reward"] >= 0 and r.json()["usage"]["decompositions"] == 2
        client = OpenAI(base_url=s.url + "/v1", api_key="x", max_retries=0)
        resp = client.chat.completions.create(
            model=MODEL, max_tokens=16,
            messages=[{"role": "user", "content": "First add 2 and 3 to get 5."}])
        assert resp.usage is not None and 0 < resp.usage.completion_tokens <= 16
        assert resp.choices[0].finish_reason in ("stop", "length")
