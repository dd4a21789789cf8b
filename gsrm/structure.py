"""The data model shared by every part of gsrm: steps, structures, traces and score results.

Why pydantic: these objects cross every boundary (CLI files, HTTP bodies, training data,
the RL client), so they validate on the way in and serialise identically everywhere.

Example::

    >>> from gsrm.structure import Step, Structure
    >>> s = Structure(steps=[Step(meta="Need eggs sold first.", subproblem="How many eggs are sold?", answer="9")])
    >>> s.n_steps
    1
"""

from __future__ import annotations

from typing import Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from gsrm.validation import check_reasoning, check_steps, check_unicode

Kind = Literal["meta", "subproblem", "answer"]
KINDS: tuple[Kind, ...] = ("meta", "subproblem", "answer")


class Step(BaseModel):
    """One decomposed step: why it comes next, the single question it answers, and the answer."""

    model_config = ConfigDict(extra="forbid")

    meta: str = Field("", description="meta-reasoning: why this sub-problem is the next one")
    subproblem: str = Field("", description="the single question this step answers")
    answer: str = Field("", description="the brief answer to the sub-problem, no reasoning")
    span: tuple[int, int] | None = Field(
        None, description="[start, end]: character offsets of the step's text in the reasoning "
        "it came from (after <think> handling); None for steps given already decomposed")

    @field_validator("span")
    @classmethod
    def _span_ordered(cls, v: tuple[int, int] | None) -> tuple[int, int] | None:
        if v is not None and not 0 <= v[0] < v[1]:
            raise ValueError(f"span {list(v)} must satisfy 0 <= start < end")
        return v

    @field_validator("meta", "subproblem", "answer")
    @classmethod
    def _encodable(cls, v: str, info: ValidationInfo) -> str:
        return check_unicode(v, str(info.field_name))

    def part(self, kind: Kind) -> str:
        """The text of one part by kind name (meta / subproblem / answer)."""
        return {"meta": self.meta, "subproblem": self.subproblem, "answer": self.answer}[kind]

    @property
    def is_complete(self) -> bool:
        return bool(self.meta.strip() and self.subproblem.strip() and self.answer.strip())


class Generation(BaseModel):
    """One generated completion and the facts needed to trust it (never silently truncated).

    A backend returns one per prompt (``text`` set); a ``Structure`` keeps the facts of the
    generation(s) it came from, whose text is its ``raw`` (``text`` and ``spans`` are left
    out of the serialised form).
    """

    text: str = Field("", exclude=True, description="the completion, as kept")
    backend: str = ""
    model: str = ""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    input_truncated: bool = Field(False, description="the trace was cut to fit max_input_tokens")
    hit_max_new_tokens: bool = Field(False, description="generation stopped at max_new_tokens")
    stopped_in_loop: bool = Field(
        False, description="generation stopped at a step repeating an earlier step word for "
        "word (the repeat and what followed were dropped)")
    cached: bool = False
    spans: list[tuple[int, int]] | None = Field(
        None, exclude=True, description="a rule decomposer's step spans, in step order")


class Structure(BaseModel):
    """A decomposition: ordered steps, the final answer line, and what parsing had to repair."""

    steps: list[Step] = Field(default_factory=list)
    final_answer: str | None = None
    warnings: list[str] = Field(default_factory=list)
    raw: str | None = Field(None, description="the generated text this was parsed from")
    generation: Generation | None = None

    @property
    def n_steps(self) -> int:
        return len(self.steps)

    def to_text(self) -> str:
        """Render in the canonical tag format (the inverse of ``gsrm.parse.parse_structure``)."""
        from gsrm.prompts import render_structure

        return render_structure(self)


class Trace(BaseModel):
    """One input: a problem with either raw reasoning text or already-decomposed steps.

    This is the shape of the JSON files ``gsrm score`` and ``gsrm decompose`` read.
    """

    model_config = ConfigDict(extra="ignore")

    problem: str = Field("", description="the problem statement the reasoning answers")
    reasoning: str | None = Field(None, description="raw reasoning text to decompose")
    steps: list[Step] | None = Field(None, description="already-decomposed steps (no generation)")
    final_answer: str | None = None

    # the rules of gsrm.validation, shared with the server: an input trace must hold something
    @field_validator("reasoning")
    @classmethod
    def _reasoning_not_blank(cls, v: str | None) -> str | None:
        return v if v is None else check_reasoning(v, "reasoning")

    @field_validator("steps")
    @classmethod
    def _steps_not_empty(cls, v: list[Step] | None) -> list[Step] | None:
        return v if v is None else list(check_steps(v, "steps"))

    @field_validator("problem")
    @classmethod
    def _problem_encodable(cls, v: str) -> str:
        return check_unicode(v, "problem")

    @field_validator("final_answer")
    @classmethod
    def _final_encodable(cls, v: str | None) -> str | None:
        return v if v is None else check_unicode(v, "final_answer")

    @model_validator(mode="after")
    def _one_of(self) -> Trace:
        if self.reasoning is None and self.steps is None:
            raise ValueError("needs either 'reasoning' (text) or 'steps' (a list of steps)")
        if self.reasoning is not None and self.steps is not None:
            raise ValueError("give either 'reasoning' or 'steps', not both")
        return self

    @property
    def structure(self) -> Structure | None:
        """The given steps as a Structure, or None when the trace is raw text."""
        if self.steps is None:
            return None
        return Structure(steps=self.steps, final_answer=self.final_answer)


class Verdict(BaseModel):
    """A judge's decision on one (teacher part, student part) pair."""

    match: bool
    score: float = Field(description="the judge's similarity or probability in [0, 1]")


class StepVerdicts(BaseModel):
    """Verdicts for step i; ``None`` where the rule did not need that comparison (gated)."""

    index: int
    meta: Verdict | None = None
    subproblem: Verdict | None = None
    answer: Verdict | None = None


ScoreMode = Literal["paper", "normalized"]


class ScoreResult(BaseModel):
    """The structural reward of one student against one teacher, with its evidence.

    ``reward`` is the value for the chosen ``mode`` (``paper``: the unnormalised sum of step
    rewards; ``normalized``: that sum over the teacher's step count). ``normalized_reward`` and
    ``coverage`` (min(1, n_student / n_teacher)) are always reported.
    """

    reward: float
    normalized_reward: float
    coverage: float
    mode: ScoreMode = "paper"
    use_coverage: bool = False
    judge: str = ""
    step_rewards: list[float] = Field(default_factory=list)
    verdicts: list[StepVerdicts] = Field(default_factory=list)
    teacher: Structure
    student: Structure
