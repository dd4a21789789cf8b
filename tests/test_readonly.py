"""Describing only the student steps the reward reads (``gsrm.readonly``).

Why: ``describe_steps="read"`` leaves student steps undescribed on the claim that the reward
never reads them; these tests hold it to that claim (the same reward as every step
described, on a table of students) and check that it describes fewer spans, says which steps
it left out, and never caches a structure with steps left out.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from gsrm.judges import get_judge
from gsrm.model import GSRM
from gsrm.readonly import READ_FIRST, first_mismatch, needs_second_round, not_read_warning
from gsrm.segment import get_segmenter
from gsrm.structure import Step
from tests.test_describe import EchoLM

ROOT = Path(__file__).resolve().parents[1]

TEACHER = "A is 1. B is 2. C is 3. D is 4."


@pytest.mark.parametrize(("rewards", "want"), [
    ([1.0, 0.5, 0.25], None),
    ([0.0, 0.0], 0),
    ([1.0, 0.5, 0.0, 0.0], 2),
    ([], None),
])
def test_first_mismatch(rewards: list[float], want: int | None) -> None:
    assert first_mismatch(rewards) == want


@pytest.mark.parametrize(("limit", "first", "rewards", "want"), [
    (5, 2, [1.0, 0.5, 0.0], True),  # the 0 at index 2 is an undescribed step: not read
    (5, 2, [1.0, 0.0, 0.0], False),  # step 2 mismatched: nothing after it is read
    (2, 2, [1.0, 1.0], False),  # nothing more the reward could read
    (1, 1, [0.0], False),
])
def test_needs_second_round(limit: int, first: int, rewards: list[float], want: bool) -> None:
    assert needs_second_round(limit, first, rewards) is want


@pytest.mark.parametrize(("args", "want"), [
    ((2, 5, 6, 0), ("steps 3-5 not described: the reward does not read them (step 1's "
                   "meta-reasoning did not match the teacher's)")),
    ((4, 5, 4, None), ("step 5 not described: the reward does not read them (the teacher has "
                      "4 steps)")),
])
def test_not_read_warning(args: tuple[int, int, int, int | None], want: str) -> None:
    assert not_read_warning(*args) == want


def _gsrm(lm: EchoLM, describe_steps: str) -> GSRM:
    return GSRM(backend=lm, judge=get_judge("lexical"), segmenter=get_segmenter("units"),
                describe_steps=describe_steps)


# (student, spans described with "read") against TEACHER's 4 steps
STUDENTS = [
    ("A is 1.  B is 2. C is 3. D is 4.", 4),  # the teacher's steps (another text): all read
    ("A is 1. B is 2. C is 3. D is 4. E is 5. F is 6.", 4),  # past the teacher's 4: not read
    ("Zed times nine equals lots. B is 2. C is 3. D is 4. E is 5.", READ_FIRST),  # step 1 off
    ("A is 1. Zed times nine equals lots. C is 3. D is 4.", READ_FIRST),  # step 2 off
    ("A is 1. B is 2. Zed times nine equals lots. D is 4. E is 5.", 4),  # off after the first
    ("A is 1.", 1),  # shorter than the teacher
]


@pytest.mark.parametrize(("student", "described"), STUDENTS)
def test_read_gives_the_reward_of_every_step_described(student: str, described: int) -> None:
    full_lm, read_lm = EchoLM(), EchoLM()
    full = _gsrm(full_lm, "all").score("p", TEACHER, student)
    read = _gsrm(read_lm, "read").score("p", TEACHER, student)
    assert math.isclose(read.reward, full.reward) and read.step_rewards == full.step_rewards
    # every step keeps its span (the step count is read: coverage, the steps compared)
    assert [s.span for s in read.student.steps] == [s.span for s in full.student.steps]
    assert sum(s.is_complete for s in read.student.steps) == described
    # the teacher's 4 steps are described first, then the student's only as far as read
    assert sum(n for n, _, _ in read_lm.calls) == 4 + described
    left_out = [w for w in read.student.warnings if "not described" in w]
    assert len(left_out) == (described < full.student.n_steps)


def test_read_batches_every_student_in_two_rounds_and_caches_none() -> None:
    lm = EchoLM()
    g = _gsrm(lm, "read")
    students = [s for s, _ in STUDENTS]
    results = g.score_many([("p", TEACHER, s) for s in students])
    # the teacher, then the first READ_FIRST steps of every student, then the rest of those
    # that matched so far: three batches, whatever the number of students
    assert len(lm.calls) == 3
    assert [r.student.n_steps for r in results] == [4, 6, 5, 4, 5, 1]
    assert g.stats["decompositions"] == 1 + len(students)
    # only the teacher's decomposition is cached: a structure with steps left out is not one
    assert len(g._cache) == 1
    again = g.score("p", TEACHER, students[0])
    assert again.reward == results[0].reward and len(lm.calls) == 5


def test_read_uses_a_cached_whole_decomposition_and_takes_given_steps() -> None:
    lm = EchoLM()
    g = _gsrm(lm, "read")
    student = STUDENTS[2][0]
    whole = g.decompose("p", student)  # cached whole: every step described
    calls = len(lm.calls)
    got = g.score_many([("p", TEACHER, student), ("p", TEACHER, whole.steps),
                        ("p", TEACHER, "<think></think>")])
    assert len(lm.calls) == calls + 1  # only the teacher was decomposed
    assert got[0].student.generation is not None and got[0].student.generation.cached
    assert all(s.is_complete for s in got[0].student.steps)
    assert got[1].reward == got[0].reward
    assert got[2].reward == 0 and got[2].student.n_steps == 0


def test_read_numbers_the_warnings_of_second_round_steps_in_the_whole_trace() -> None:
    class NoAnswerAfterTwo(EchoLM):
        def reply_to(self, conv: list[dict[str, str]]) -> str:
            if conv[-1]["role"] == "assistant":  # the format repair's continuation
                return ""
            return super().reply_to(conv) if "C is 3" not in conv[-1]["content"] else (
                "[Meta-reasoning 1]: Do C\n[Sub-problem 1]: What is C?\n")

    lm = NoAnswerAfterTwo()
    got = _gsrm(lm, "read").score("p", "A is 1. B is 2. X is 7. D is 4.",
                                  "A is 1. B is 2. C is 3. D is 4.")
    assert any(w.startswith("step 3:") for w in got.student.warnings), got.student.warnings


def test_describe_steps_is_checked_and_reaches_the_server_and_the_cli() -> None:
    from gsrm.cli import build_parser
    from server.service import gsrm_from_settings
    from server.settings import Settings

    with pytest.raises(ValueError, match="describe_steps"):
        GSRM(backend=EchoLM(), describe_steps="some")
    s = Settings(backend="sentences", judge="lexical", describe_steps="read")
    assert gsrm_from_settings(s).describe_steps == "read"
    args = build_parser().parse_args(["score", "t.json", "s.json", "--describe-steps", "read"])
    assert args.describe_steps == "read"


def test_read_with_a_describer_that_sees_the_previous_span_describes_every_step() -> None:
    from tests.test_describe import PreviousEchoLM

    lm = PreviousEchoLM()
    g = GSRM(backend=lm, judge=get_judge("lexical"), segmenter=get_segmenter("units"),
             describe_steps="read")
    got = g.score("p", TEACHER, STUDENTS[2][0])
    assert not g.reads_only and all(s.is_complete for s in got.student.steps)


def test_read_with_a_rule_backend_describes_every_step() -> None:
    # a rule decomposer has no describer: the option changes nothing
    g = GSRM.from_names(backend="sentences", judge="lexical", describe_steps="read")
    full = GSRM.from_names(backend="sentences", judge="lexical")
    a, b = g.score("p", TEACHER, STUDENTS[2][0]), full.score("p", TEACHER, STUDENTS[2][0])
    assert a == b


@pytest.mark.slow
def test_read_gives_the_same_rewards_with_the_default_model() -> None:
    # the real path: the shipped describer on the engine's default, the embedding judge, on
    # the reward server benchmark's students (the two examples, and four with an opener and
    # extra spaces, two of which mismatch the teacher early); scored both ways in one process
    import random

    from benchmarks.load import raw_student, raw_texts

    teacher = json.loads((ROOT / "examples" / "teacher.json").read_text())
    texts = raw_texts()
    students = texts + [raw_student(i, random.Random(0), texts) for i in range(4)]
    items = [(teacher["problem"], teacher["reasoning"], s) for s in students]
    g = GSRM.from_names(judge="embedding", backend_kwargs={"threads": 2})
    full = g.score_many(items)
    g.describe_steps = "read"
    g._cache.clear()
    read = g.score_many(items)
    assert [r.reward for r in read] == [f.reward for f in full]
    assert [r.student.n_steps for r in read] == [f.student.n_steps for f in full]
    left = sum(not s.is_complete for r in read for s in r.student.steps)
    assert left > 0, [r.step_rewards for r in full]  # early mismatches: steps left out
    assert all(isinstance(s, Step) for r in read for s in r.student.steps)
