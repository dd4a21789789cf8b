"""GSRM: content-hash cache, batching of distinct texts, mixing raw text and steps."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from gsrm.backends import Backend, Generation
from gsrm.judges import LexicalJudge
from gsrm.model import GSRM, as_structure, strip_think
from gsrm.structure import Step, Structure


class CountingBackend(Backend):
    """Decomposes by sentences and records every batch it is asked for."""

    name = "counting"

    def __init__(self) -> None:
        super().__init__(shots=0)
        self.batches: list[list[tuple[str, str]]] = []

    def generate(self, conversations, max_new_tokens=None):  # pragma: no cover
        raise NotImplementedError

    def decompose_many(self, items: Sequence[tuple[str, str]]) -> list[Generation]:
        from gsrm.backends import SentenceBackend

        self.batches.append(list(items))
        return SentenceBackend().decompose_many(items)


TEACHER = "First count the eggs: 3 * 24 = 72. Then remove the broken ones: 72 - 12 = 60."


def test_teacher_decomposed_once_for_a_group_of_students() -> None:
    backend = CountingBackend()
    g = GSRM(backend=backend, judge=LexicalJudge())
    students = [f"First count the eggs: 3 * 24 = 72. Then {i} more." for i in range(4)]
    results = g.score_many([("p", TEACHER, s) for s in students])
    assert len(results) == 4
    # one backend batch; the teacher appears once in it, each distinct student once
    assert len(backend.batches) == 1
    assert [r for _, r in backend.batches[0]].count(TEACHER) == 1
    assert len(backend.batches[0]) == 5
    # a second call with the same teacher and a new student decomposes only the student
    g.score_many([("p", TEACHER, "Something new = 3.")])
    assert backend.batches[1] == [("p", "Something new = 3.")]
    assert g.stats["cache_hits"] >= 1


def test_cached_results_are_flagged_and_not_shared_mutably() -> None:
    g = GSRM(backend=CountingBackend())
    a = g.decompose("p", TEACHER)
    b = g.decompose("p", TEACHER)
    assert a.generation is not None and not a.generation.cached
    assert b.generation is not None and b.generation.cached
    b.steps.clear()
    assert g.decompose("p", TEACHER).n_steps == 2


def test_cache_is_bounded() -> None:
    g = GSRM(backend=CountingBackend(), cache_size=2)
    for i in range(5):
        g.decompose("p", f"Step {i} = {i}.")
    assert len(g._cache) == 2


def test_pre_structured_sides_never_call_the_backend() -> None:
    backend = CountingBackend()
    g = GSRM.from_names(backend="sentences", judge="lexical")
    g._backend = backend
    steps = [Step(meta="count eggs", subproblem="how many eggs", answer="72")]
    r = g.score("p", steps, [s.model_dump() for s in steps])
    assert r.reward == 1.0 and backend.batches == []


@pytest.mark.parametrize(
    "text, expected",
    [
        ("<think>a</think>b", "a"),  # reasoning before </think>
        ("no tags at all", "no tags at all"),  # nothing to strip
        ("a</think>b</think>c", "a"),  # only the first close tag counts
        ("<think>\nx\n", "x"),  # unterminated think: the whole text
    ],
)
def test_strip_think(text: str, expected: str) -> None:
    assert strip_think(text) == expected


def test_student_think_block_is_what_gets_decomposed() -> None:
    backend = CountingBackend()
    g = GSRM(backend=backend)
    g.decompose("p", "<think>2 + 3 = 5.</think> The answer is 5.")
    assert backend.batches[0] == [("p", "2 + 3 = 5.")]


def test_as_structure() -> None:
    assert as_structure("text") is None
    s = Structure(steps=[Step(meta="m")])
    assert as_structure(s) is s
    assert as_structure([{"meta": "m", "subproblem": "q", "answer": "a"}]).steps[0].answer == "a"


def test_unknown_mode_rejected() -> None:
    with pytest.raises(ValueError, match="unknown score mode"):
        GSRM(mode="bogus")  # type: ignore[arg-type]
