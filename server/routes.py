"""The HTTP endpoints: each one translates its wire shape to ``RewardService`` calls and back.

Why so thin: the logic (limits, batching, scoring, errors) lives in ``service``; an endpoint
here only maps its request (``protocol``) to ``Pair`` objects and the service's outcomes to its
response shape, built as plain dicts (the response models in ``protocol`` document them in
``/openapi.json``; tests validate responses against them).

Example::

    >>> from server.routes import response_text
    >>> response_text("<|im_start|>user\\n2+3?<|im_end|>\\n<|im_start|>assistant\\n5<|im_end|>",
    ...               "<|im_start|>user\\n2+3?<|im_end|>\\n<|im_start|>assistant\\n")
    '5'
"""

from __future__ import annotations

import re
import time
import uuid
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from gsrm.flags import FLAGS
from gsrm.validation import check_teacher
from server.errors import BadRequest, ValidationFailed
from server.protocol import (
    ChatCompletionRequest,
    ChatCompletionResponse,
    ErrorResponse,
    GetRewardRequest,
    GetRewardResponse,
    Health,
    ModelList,
    RewardsRequest,
    RewardsResponse,
    ScoreRequest,
    ScoreResponse,
)
from server.service import Outcome, Pair, RewardService

router = APIRouter()

_ERROR_DOCS = {
    400: "malformed JSON or an unsupported request",
    401: "missing or wrong API key (when the server has one)",
    404: "the model named in the request is not served here",
    413: "body, items, reasoning or steps over the server's limits",
    422: "the body does not match the schema",
    500: "the backend or judge failed: no reward was computed",
    503: "queue full or shutting down; retry after Retry-After seconds",
    504: "the request exceeded request_timeout_s",
}


def _errors(*extra: int) -> dict[int | str, dict[str, Any]]:
    codes = sorted({*_ERROR_DOCS, *extra})
    return {c: {"model": ErrorResponse, "description": _ERROR_DOCS.get(c, "not implemented by "
                                                                           "this backend")}
            for c in codes}


def _svc(request: Request) -> RewardService:
    return request.app.state.service


def _id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:24]}"


def usage_of(outs: list[Outcome]) -> dict[str, int]:
    """Token usage of the decompositions generated for these outcomes (each counted once)."""
    seen: set[int] = set()
    prompt = completion = made = cached = 0
    for o in outs:
        for s in (o.result.teacher, o.result.student):
            g = s.generation
            if g is None:
                continue
            if g.cached:
                cached += 1
            elif id(s) not in seen:
                seen.add(id(s))
                made += 1
                prompt += g.prompt_tokens
                completion += g.completion_tokens
    return {"prompt_tokens": prompt, "completion_tokens": completion,
            "total_tokens": prompt + completion, "pairs": len(outs), "decompositions": made,
            "cached_decompositions": cached}


def reward_data(index: int, o: Outcome, details: bool) -> dict[str, Any]:
    r = o.result
    d: dict[str, Any] = {
        "index": index, "object": "reward", "reward": o.reward,
        "normalized_reward": r.normalized_reward, "coverage": r.coverage, "mode": o.mode,
        "step_rewards": r.step_rewards, "teacher_steps": r.teacher.n_steps,
        "student_steps": r.student.n_steps, "truncated": o.truncated, "warnings": o.warnings,
        "flags": o.flags,
    }
    if details:
        d["teacher"] = r.teacher.model_dump(mode="json")
        d["student"] = r.student.model_dump(mode="json")
        d["verdicts"] = [v.model_dump(mode="json") for v in r.verdicts]
    return d


# --------------------------------------------------------------------------- OpenRLHF helpers
_SPECIAL = re.compile(r"<\|[^|<>\s]{1,40}\|>|</s>|<s>")
_TRAILING_SPECIAL = re.compile(r"(?:\s*(?:<\|[^|<>\s]{1,40}\|>|</s>))+\s*\Z")
_ASSISTANT = re.compile(r"<\|im_start\|>assistant\s*|<\|start_header_id\|>assistant"
                        r"<\|end_header_id\|>\s*|<\|Assistant\|>|\[/INST\]")
_USER_TURN = re.compile(r"<\|im_start\|>user\s*(.*?)<\|im_end\|>|<\|start_header_id\|>user"
                        r"<\|end_header_id\|>\s*(.*?)<\|eot_id\|>|<\|User\|>(.*?)<\|Assistant\|>",
                        re.DOTALL)
_ROLE_HEADER = re.compile(r"<\|im_start\|>(?:system|user|assistant)\s*|<\|start_header_id\|>"
                          r"\w+<\|end_header_id\|>\s*")


def response_text(query: str, prompt: str | None) -> str:
    """The response part of an OpenRLHF query (prompt + response, special tokens kept).

    With the prompt: the text after it (``query`` starts with it; else after its first
    occurrence). Without: the text after the last assistant header of a known chat template
    (ChatML, Llama 3, DeepSeek, [INST]), else the whole query. Trailing end-of-turn tokens are
    removed; the GSRM itself keeps only the part before ``</think>``.
    """
    if prompt:
        if query.startswith(prompt):
            resp = query[len(prompt):]
        else:
            k = query.find(prompt)
            resp = query[k + len(prompt):] if k >= 0 else query
    else:
        heads = list(_ASSISTANT.finditer(query))
        resp = query[heads[-1].end():] if heads else query
    return _TRAILING_SPECIAL.sub("", resp)


def problem_text(prompt: str | None) -> str:
    """The problem statement in a templated prompt: its last user turn, without special tokens.

    >>> problem_text("<|im_start|>system\\nBe brief.<|im_end|>\\n<|im_start|>user\\n2+3?"
    ...              "<|im_end|>\\n<|im_start|>assistant\\n")
    '2+3?'
    """
    if not prompt:
        return ""
    turns = list(_USER_TURN.finditer(prompt))
    if turns:
        m = turns[-1]
        return next(g for g in m.groups() if g is not None).strip()
    return _SPECIAL.sub("", _ROLE_HEADER.sub("", prompt)).strip()


# --------------------------------------------------------------------------- endpoints
@router.get("/health", response_model=Health, responses={503: {"model": Health}},
            summary="readiness: ready / loading / failed, model id, queue depth")
async def health(request: Request) -> JSONResponse:
    svc = _svc(request)
    body = svc.health()
    ready = body["status"] == "ready"
    headers = None if ready else {"Retry-After": str(svc.settings.retry_after_s)}
    return JSONResponse(body, status_code=200 if ready else 503, headers=headers)


@router.get("/v1/models", response_model=ModelList, responses=_errors(),
            summary="the served model (OpenAI shape)")
async def models(request: Request) -> JSONResponse:
    svc = _svc(request)
    return JSONResponse({"object": "list", "data": [{
        "id": svc.settings.served_model_name, "object": "model", "created": svc.created,
        "owned_by": "gsrm", "root": svc.backend_model}]})


@router.get("/metrics", summary="Prometheus metrics", response_class=Response,
            responses={200: {"content": {"text/plain": {}}}})
async def metrics(request: Request) -> Response:
    body, ctype = _svc(request).metrics.render()
    return Response(body, media_type=ctype)


@router.post("/v1/chat/completions", response_model=ChatCompletionResponse,
             responses=_errors(501), summary="the GSRM as a chat model: the reply is the "
             "decomposition")
async def chat_completions(body: ChatCompletionRequest, request: Request) -> JSONResponse:
    svc = _svc(request)
    out = await svc.chat(body)
    g = out.generation
    return JSONResponse({
        "id": _id("chatcmpl"), "object": "chat.completion", "created": int(time.time()),
        "model": svc.settings.served_model_name,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": g.text},
                     "finish_reason": "length" if g.hit_max_new_tokens else "stop",
                     "logprobs": None}],
        "usage": {"prompt_tokens": g.prompt_tokens, "completion_tokens": g.completion_tokens,
                  "total_tokens": g.prompt_tokens + g.completion_tokens},
        "gsrm": {"input_truncated": out.input_truncated, "stopped_in_loop": g.stopped_in_loop,
                 "prompt_built": out.prompt_built},
    })


@router.post("/v1/rewards", response_model=RewardsResponse, responses=_errors(),
             summary="native: batched structural rewards with per-step rewards")
async def rewards(body: RewardsRequest, request: Request) -> JSONResponse:
    svc = _svc(request)
    svc.check_model(body.model)
    opts = svc.options(body.options)
    svc.check_items(len(body.items), "items")
    pairs = [Pair(it.problem, it.teacher, it.student,
                  (f"items[{i}].problem", f"items[{i}].teacher", f"items[{i}].student"))
             for i, it in enumerate(body.items)]
    outs = await svc.score_pairs(pairs, opts)
    return JSONResponse({
        "id": _id("rwd"), "object": "list", "created": int(time.time()),
        "model": svc.settings.served_model_name,
        "data": [reward_data(i, o, opts.details) for i, o in enumerate(outs)],
        "usage": usage_of(outs),
    })


async def _score(body: ScoreRequest, request: Request) -> JSONResponse:
    svc = _svc(request)
    svc.check_model(body.model)
    opts = svc.options(body.options)
    t1 = [body.text_1] if isinstance(body.text_1, str) else body.text_1
    t2 = [body.text_2] if isinstance(body.text_2, str) else body.text_2
    if len(t1) == 1:
        pairs = [Pair(body.problem, t1[0], s, ("problem", "text_1", f"text_2[{i}]"))
                 for i, s in enumerate(t2)]
    elif len(t1) == len(t2):
        pairs = [Pair(body.problem, t, s, ("problem", f"text_1[{i}]", f"text_2[{i}]"))
                 for i, (t, s) in enumerate(zip(t1, t2))]
    else:
        raise BadRequest(f"text_1 has {len(t1)} entries and text_2 {len(t2)}: give one text_1, "
                         f"or as many as text_2", param="text_1")
    svc.check_items(len(pairs), "text_2")
    outs = await svc.score_pairs(pairs, opts)
    u = usage_of(outs)
    return JSONResponse({
        "id": _id("score"), "object": "list", "created": int(time.time()),
        "model": svc.settings.served_model_name,
        "data": [{"index": i, "object": "score", "score": o.reward, "truncated": o.truncated,
                  "warnings": o.warnings, "flags": o.flags} for i, o in enumerate(outs)],
        "usage": {k: u[k] for k in ("prompt_tokens", "completion_tokens", "total_tokens")},
    })


@router.post("/score", response_model=ScoreResponse, responses=_errors(),
             summary="vLLM's score shape: text_1 teacher, text_2 student(s)")
async def score(body: ScoreRequest, request: Request) -> JSONResponse:
    return await _score(body, request)


@router.post("/v1/score", response_model=ScoreResponse, responses=_errors(),
             summary="alias of /score")
async def score_v1(body: ScoreRequest, request: Request) -> JSONResponse:
    return await _score(body, request)


@router.post("/get_reward", response_model=GetRewardResponse, responses=_errors(),
             summary="OpenRLHF's remote reward model (--remote_rm_url .../get_reward)")
async def get_reward(body: GetRewardRequest, request: Request) -> JSONResponse:
    svc = _svc(request)
    opts = svc.options(body.options)
    n = len(body.query)
    svc.check_items(n, "query")
    if body.labels is None:
        raise ValidationFailed("labels is missing: the teacher reasoning comes in labels; start "
                               "OpenRLHF with --label_key <the dataset column holding it>",
                               param="labels")
    if len(body.labels) != n:
        raise BadRequest(f"labels has {len(body.labels)} entries for {n} queries",
                         param="labels")
    if body.prompts is not None and len(body.prompts) != n:
        raise BadRequest(f"prompts has {len(body.prompts)} entries for {n} queries",
                         param="prompts")
    pairs = []
    for i, (q, label) in enumerate(zip(body.query, body.labels)):
        prompt = body.prompts[i] if body.prompts is not None else None
        problem = problem_text(prompt)
        if isinstance(label, str):
            try:
                teacher: Any = check_teacher(label, f"labels[{i}]")
            except ValueError as exc:
                raise ValidationFailed(f"{exc} (it must hold the teacher reasoning)",
                                       param=f"labels[{i}]") from None
        else:
            teacher = label.steps if label.steps is not None else label.reasoning
            problem = label.problem or problem
        pairs.append(Pair(problem, teacher, response_text(q, prompt),
                          (f"prompts[{i}]", f"labels[{i}]", f"query[{i}]")))
    outs = await svc.score_pairs(pairs, opts)
    rewards_ = [o.reward for o in outs]
    flags = [o.flags for o in outs]
    return JSONResponse({
        "rewards": rewards_,
        "scores": [o.result.normalized_reward for o in outs],
        "extra_logs": {
            "gsrm_reward": rewards_,
            "gsrm_normalized_reward": [o.result.normalized_reward for o in outs],
            "gsrm_coverage": [o.result.coverage for o in outs],
            "gsrm_teacher_steps": [float(o.result.teacher.n_steps) for o in outs],
            "gsrm_student_steps": [float(o.result.student.n_steps) for o in outs],
            # one 0/1 list per gsrm.flags name: the trainer's counts of cut, budget-bound,
            # looping and empty items (gsrm_truncated also counts the backend's cuts)
            **{f"gsrm_{flag}": [float(flag in f) for f in flags] for flag in FLAGS},
        },
    })
