"""Request and response bodies of every endpoint (pydantic v2), and nothing else.

Why separate from the logic: these models are the wire contract (DESIGN.md section 4). FastAPI
validates requests against them, they generate ``/openapi.json`` (which the schemathesis test
fuzzes), and clients can import them to build payloads without a network.

A *side* of a comparison (``teacher``/``student``) is raw reasoning text, or a list of steps
``{"meta", "subproblem", "answer"}`` that are scored as given (no generation).

Example::

    >>> from server.protocol import RewardsRequest
    >>> r = RewardsRequest.model_validate({"items": [{"problem": "2+3?",
    ...     "teacher": "Add 2 and 3 = 5.", "student": [{"meta": "add", "subproblem": "2+3?",
    ...     "answer": "5"}]}], "options": {"mode": "normalized"}})
    >>> type(r.items[0].student).__name__, r.options.mode
    ('list', 'normalized')
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from gsrm.structure import Step, StepVerdicts, Structure, Trace
from gsrm.validation import check_teacher

Side = str | list[Step]
Mode = Literal["paper", "normalized"]


def _teacher(v: Any, what: str) -> Any:
    """A teacher side must hold reasoning or steps (``gsrm.validation.check_teacher``, the rule
    the CLI and the library apply too): blank text, think tags only, or an answer after
    ``</think>`` only is a 422, like an empty list."""
    return check_teacher(v, what)


# --------------------------------------------------------------------------- options
class ScoreOptions(BaseModel):
    """Per-request scoring options; unset fields take the server's defaults."""

    model_config = ConfigDict(extra="forbid")

    mode: Mode | None = Field(None, description="paper: sum of step rewards; normalized: "
                                 "that sum over the teacher's step count")
    coverage: bool | None = Field(None, description="add min(1, n_student/n_teacher)")
    truncate: bool | None = Field(None, description="cut over-long reasoning / step lists to "
                                     "the server's limits instead of answering 413; cut items "
                                     "say so (truncated: true, warnings)")
    details: bool = Field(False, description="also return both decompositions and the judge's "
                          "per-step verdicts")
    judge: str | None = Field(None, description="must name the server's judge if given "
                                 "(a server scores with one judge)")


# --------------------------------------------------------------------------- /v1/rewards
class RewardItem(BaseModel):
    """One (problem, teacher, student) pair. The student may be empty (scored 0 with a warning);
    the teacher may not (422: there is nothing to distil)."""

    model_config = ConfigDict(extra="forbid")

    problem: str = Field("", description="the problem both reasonings answer")
    teacher: Side = Field(description="teacher reasoning text, or its steps")
    student: Side = Field(description="student reasoning text (text after </think> is "
                          "ignored), or its steps")

    @field_validator("teacher")
    @classmethod
    def _teacher(cls, v: Side) -> Side:
        return _teacher(v, "teacher")


class RewardsRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{
        "model": "gsrm",
        "items": [{"problem": "What is 2+3, doubled?",
                   "teacher": [{"meta": "Add first.", "subproblem": "What is 2+3?",
                                "answer": "5"}],
                   "student": "First add 2 and 3 to get 5. Then double it: 10."}],
        "options": {"mode": "paper"}}]})

    model: str | None = Field(None, description="optional; must match the served model id")
    items: list[RewardItem] = Field(min_length=1, description="pairs to score (at most "
                                    "max_items)")
    options: ScoreOptions = Field(default_factory=ScoreOptions)


class RewardData(BaseModel):
    index: int
    object: Literal["reward"] = "reward"
    reward: float = Field(description="the reward in the requested mode")
    normalized_reward: float
    coverage: float
    mode: Mode
    step_rewards: list[float] = Field(description="r_i per compared step position")
    teacher_steps: int = Field(description="number of teacher steps")
    student_steps: int = Field(description="number of student steps")
    truncated: bool = Field(False, description="the server cut this item's input (truncate)")
    warnings: list[str] = Field(default_factory=list,
                                description="decomposition and truncation warnings, by side")
    flags: list[str] = Field(default_factory=list, description="what the reward rests on less "
                             "than the whole input for, by name (gsrm.flags): truncated, "
                             "hit_budget, loop, empty_student")
    teacher: Structure | None = None
    student: Structure | None = None
    verdicts: list[StepVerdicts] | None = None


class Usage(BaseModel):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0


class RewardUsage(Usage):
    pairs: int = 0
    decompositions: int = Field(0, description="decompositions generated for this request")
    cached_decompositions: int = Field(0, description="decompositions served from the cache")


class RewardsResponse(BaseModel):
    id: str
    object: Literal["list"] = "list"
    created: int
    model: str
    data: list[RewardData]
    usage: RewardUsage


# --------------------------------------------------------------------------- /score (vLLM)
class ScoreRequest(BaseModel):
    """vLLM's score shape: ``text_1`` the teacher reasoning, ``text_2`` the student(s).

    One ``text_1`` is compared with every ``text_2``; two lists of equal length are compared
    pairwise.
    """

    model_config = ConfigDict(extra="ignore", json_schema_extra={"examples": [{
        "model": "gsrm", "problem": "What is 2+3, doubled?",
        "text_1": "Add 2 and 3 to get 5. Double 5 to get 10.",
        "text_2": ["First 2+3 = 5. Then 5*2 = 10.", "10."]}]})

    model: str | None = None
    text_1: str | list[str] = Field(description="teacher reasoning (or a list, pairwise)")
    text_2: str | list[str] = Field(description="student reasoning(s)")
    problem: str = Field("", description="the problem both answer (gsrm extension)")
    options: ScoreOptions | None = None

    @field_validator("text_1")
    @classmethod
    def _text_1(cls, v: str | list[str]) -> str | list[str]:
        if isinstance(v, list):
            if not v:
                raise ValueError("text_1 is an empty list")
            for t in v:
                _teacher(t, "text_1")
            return v
        return _teacher(v, "text_1")

    @field_validator("text_2")
    @classmethod
    def _text_2(cls, v: str | list[str]) -> str | list[str]:
        if isinstance(v, list) and not v:
            raise ValueError("text_2 is an empty list")
        return v


class ScoreData(BaseModel):
    index: int
    object: Literal["score"] = "score"
    score: float
    truncated: bool = Field(False, description="the server cut this pair's input "
                            "(options.truncate or --truncate); see warnings (gsrm extension)")
    warnings: list[str] = Field(default_factory=list, description="truncation and "
                                "decomposition warnings, by side (gsrm extension)")
    flags: list[str] = Field(default_factory=list, description="gsrm.flags names: truncated, "
                             "hit_budget, loop, empty_student (gsrm extension)")


class ScoreResponse(BaseModel):
    id: str
    object: Literal["list"] = "list"
    created: int
    model: str
    data: list[ScoreData]
    usage: Usage


# --------------------------------------------------------------------------- /get_reward
class GetRewardRequest(BaseModel):
    """OpenRLHF's remote reward model request (``--remote_rm_url``).

    ``query`` holds prompt + response as decoded by the trainer, ``prompts`` the prompts
    (stripped from the front of each query), ``labels`` the dataset's ``--label_key`` column:
    the teacher's reasoning as text, or a trace object ``{problem, reasoning | steps}``.
    """

    model_config = ConfigDict(extra="ignore", json_schema_extra={"examples": [{
        "query": [("<|im_start|>user\nWhat is 2+3, doubled?<|im_end|>\n<|im_start|>assistant\n"
                  "<think>2+3 = 5. Then 5*2 = 10.</think> 10<|im_end|>")],
        "prompts": [("<|im_start|>user\nWhat is 2+3, doubled?<|im_end|>\n"
                    "<|im_start|>assistant\n")],
        "labels": ["Add 2 and 3 to get 5. Double 5 to get 10."]}]})

    query: list[str] = Field(min_length=1, description="prompt + response strings")
    prompts: list[str] | None = Field(None, description="the prompt of each query")
    labels: list[str | Trace] | None = Field(
        None, description="teacher reasoning per query (text or {problem, reasoning|steps}); "
        "OpenRLHF fills it from --label_key")
    options: ScoreOptions | None = None


class GetRewardResponse(BaseModel):
    rewards: list[float]
    scores: list[float] = Field(description="normalized rewards in [0, 1] (OpenRLHF dynamic "
                                "filtering)")
    extra_logs: dict[str, list[float]]


# --------------------------------------------------------------------------- chat
class TextPart(BaseModel):
    model_config = ConfigDict(extra="ignore")

    type: Literal["text"]
    text: str


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")

    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[TextPart] | None = None
    name: str | None = None

    @property
    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(p.text for p in self.content)


class ChatCompletionRequest(BaseModel):
    """The subset of OpenAI's chat completion request the GSRM serves (greedy, one choice).

    ``temperature``, ``top_p``, ``seed``, ``stop`` and ``user`` are accepted and ignored
    (decoding is greedy); ``n`` > 1 and ``stream`` are refused with 400.
    """

    model_config = ConfigDict(extra="ignore", json_schema_extra={"examples": [{
        "model": "gsrm", "messages": [{"role": "user", "content": "First add 2 and 3 = 5. "
                                       "Then double it: 10."}], "max_tokens": 128}]})

    model: str
    messages: list[ChatMessage] = Field(min_length=1)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, ge=0, le=1)
    n: int | None = Field(None, ge=1)
    stream: bool | None = None
    seed: int | None = None
    stop: str | list[str] | None = None
    user: str | None = None


class ChatChoiceMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str


class ChatChoice(BaseModel):
    index: int
    message: ChatChoiceMessage
    finish_reason: Literal["stop", "length"]
    logprobs: None = None


class ChatGsrmInfo(BaseModel):
    input_truncated: bool = False
    stopped_in_loop: bool = False
    prompt_built: bool = Field(description="the server wrapped the last user message in the "
                               "canonical decomposition prompt (no system message was sent)")


class ChatCompletionResponse(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[ChatChoice]
    usage: Usage
    gsrm: ChatGsrmInfo


# --------------------------------------------------------------------------- misc
class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "gsrm"
    root: str = Field("", description="the backend's model (e.g. the HF folder)")


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class Health(BaseModel):
    status: Literal["loading", "ready", "failed", "stopping"]
    model: str
    backend: str
    judge: str
    queue_depth: int = Field(description="pairs waiting for the worker")
    in_flight: int = Field(description="pairs in the batch the worker is running")
    error: str | None = None


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(BaseModel):
    error: ErrorDetail
