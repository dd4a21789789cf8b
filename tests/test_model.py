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
        ("<think><think>x", "x"),  # every open tag goes: applying it twice changes nothing
        ("</think> 5", ""),  # an answer with no reasoning before it: empty
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


# --------------------------------------------------------------------------- issue 17
EMPTY_STUDENTS = [
    # (id, student text): every one holds no reasoning once think tags are removed
    ("think-tags-only", "<think></think>"),  # the reported case: the model invented steps
    ("blank-think", "<think>  \n </think> The answer is 5."),  # only an answer after </think>
    ("answer-only", "</think> 5"),  # no reasoning before the close tag
    ("whitespace", "  \n\t "),  # blank
]


@pytest.mark.parametrize("case", EMPTY_STUDENTS, ids=[c[0] for c in EMPTY_STUDENTS])
def test_empty_student_is_never_decomposed_and_scores_zero_with_a_warning(case: tuple) -> None:
    # issue 17 row 1: no model call, no steps, a scored 0 with a warning
    from gsrm.validation import EMPTY_REASONING

    _, student = case
    backend = CountingBackend()
    g = GSRM(backend=backend, judge=LexicalJudge())
    steps = [Step(meta="count eggs", subproblem="how many eggs", answer="72")]
    res = g.score("p", steps, student)
    assert backend.batches == []
    assert (res.reward, res.student.n_steps, res.step_rewards) == (0.0, 0, [])
    assert res.student.warnings == [EMPTY_REASONING]


def test_empty_texts_leave_the_batch_and_the_rest_keep_their_order() -> None:
    # issue 17 row 1: only the non-empty texts reach the backend, in one batch
    backend = CountingBackend()
    g = GSRM(backend=backend)
    out = g.decompose_many([("p", "A = 1."), ("p", "<think></think>"), ("p", "B = 2.")])
    assert backend.batches == [[("p", "A = 1."), ("p", "B = 2.")]]
    assert [s.n_steps for s in out] == [1, 0, 1]
    assert [s.steps[0].answer for s in (out[0], out[2])] == ["1", "2"]


@pytest.mark.parametrize("teacher", ["<think></think>", "</think> 5", " ", []],
                         ids=["think-tags", "answer-only", "blank", "no-steps"])
def test_empty_teacher_is_bad_input_not_a_reward(teacher: object) -> None:
    # issue 17 rows 1-2: there is nothing to distil; the library raises (never a 0)
    backend = CountingBackend()
    g = GSRM(backend=backend, judge=LexicalJudge())
    with pytest.raises(ValueError, match="teacher"):
        g.score("p", teacher, "2 + 3 = 5.")  # type: ignore[arg-type]
    assert backend.batches == []


def test_cache_key_parts_are_length_prefixed() -> None:
    # issue 17 row 6: with parts joined by \0, ("Q\0", "T") and ("Q", "\0T") shared a key,
    # and the second item got the first one's decomposition
    backend = CountingBackend()
    g = GSRM(backend=backend)
    assert g.cache_key("Q\0", "T = 1.") != g.cache_key("Q", "\0T = 1.")
    g.decompose("Q\0", "T = 1.")
    second = g.decompose("Q", "\0T = 1.")
    assert backend.batches == [[("Q\0", "T = 1.")], [("Q", "\0T = 1.")]]
    assert second.generation is not None and not second.generation.cached


class ShortBackend(CountingBackend):
    """Returns one decomposition fewer than it was asked for."""

    def decompose_many(self, items):
        return super().decompose_many(items)[:-1]


def test_a_short_backend_answer_is_an_error_never_a_mispairing() -> None:
    # resolve/score_many pair sides by position: a missing decomposition must raise, not
    # shift the remaining ones onto other items
    from gsrm.backends import BackendError

    g = GSRM(backend=ShortBackend(), judge=LexicalJudge())
    steps = [Step(meta="m", subproblem="q", answer="1")]
    with pytest.raises(BackendError, match="returned 1 decompositions for 2 texts"):
        g.score_many([("p", "A = 1.", steps), ("p", steps, "B = 2.")])


def test_mixed_sides_pair_with_their_own_items() -> None:
    # raw and pre-structured sides interleaved: each result holds its own item's two sides
    g = GSRM(backend=CountingBackend(), judge=LexicalJudge())
    items = [(f"p{i}", f"Teacher {i} = {i}." if i % 2 else [Step(meta=f"t{i}", answer=str(i))],
              [Step(meta=f"s{i}", answer=str(i))] if i % 2 else f"Student {i} = {i}.")
             for i in range(5)]
    for i, res in enumerate(g.score_many(items)):
        t, s = res.teacher.steps[0], res.student.steps[0]
        assert (t.answer, s.answer) == (str(i), str(i))
        assert (f"{i}" in t.meta) and (f"{i}" in s.meta)
