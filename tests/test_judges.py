"""Judges: numbers, lexical F1, strict yes/no parsing, the llm judge over real HTTP, embeddings."""

from __future__ import annotations

import pytest

from gsrm.judges import (
    JUDGES,
    JudgeError,
    LLMJudge,
    answer_number,
    build_judge_messages,
    get_judge,
    numbers_agree,
    parse_verdict,
    token_f1,
    verdict_from_logprobs,
)
from tests.openai_stub import chat_response, openai_stub

NUMBER_CASES = [
    ("9", 9.0),  # a bare number
    ("$1,250", 1250.0),  # currency and thousands separator
    ("16 - 3 - 4 = 9 duck eggs", 9.0),  # the value after the last '='
    ("9 duck eggs a day", 9.0),  # the only number, with units
    ("3/4", 0.75),  # a fraction
    ("-3", -3.0),  # a negative number
    ("50%", 50.0),  # a percentage keeps its value
    ("3 crates of 24 eggs", None),  # two numbers and no '=': ambiguous, no value
    ("the blue one", None),  # no number
    ("x = 2.5", 2.5),  # decimal after '='
]


@pytest.mark.parametrize("text, expected", NUMBER_CASES, ids=[c[0] for c in NUMBER_CASES])
def test_answer_number(text: str, expected: float | None) -> None:
    assert answer_number(text) == expected


NUMBERS_AGREE_CASES = [
    ("So n is 71.5.", "So n is 45.", False),  # a near-copy with one quantity changed
    ("Then 2p = 0.58.", "This simplifies to 2p = 0.58.", True),  # a rewording keeps them
    ("It costs $1,250.", "1250 dollars", True),  # one value, two spellings
    ("Add 3 and 4.", "Add 4 and 3.", True),  # the same numbers in another order
    ("Add 3 and 4.", "Add 3 and 5.", False),
    ("Add them up.", "Add 3 and 4.", True),  # one side has none: the score decides
    ("Now the total.", "Then the sum.", True),  # neither has any
]


@pytest.mark.parametrize("a, b, expected", NUMBERS_AGREE_CASES,
                         ids=[f"{c[0]}|{c[1]}" for c in NUMBERS_AGREE_CASES])
def test_numbers_agree(a: str, b: str, expected: bool) -> None:
    assert numbers_agree(a, b) is expected
    assert numbers_agree(b, a) is expected  # symmetric


@pytest.mark.parametrize("name", ["lexical", "embedding"])
def test_threshold_judges_refuse_changed_numbers_unless_told_not_to(name: str) -> None:
    if name == "embedding":
        pytest.importorskip("sentence_transformers")
    pair = ("So the number of students is 71.5.", "So the number of students is 45.")
    on, off = get_judge(name), get_judge(name, numbers=False)
    v_on, v_off = on.judge_many([pair], "meta")[0], off.judge_many([pair], "meta")[0]
    assert v_off.match and not v_on.match  # the score passes; the number check says no
    assert v_on.score == v_off.score  # the score itself is reported unchanged


VERDICT_CASES = [
    ("yes", True),  # plain
    ("Yes.", True),  # punctuation and case
    ("**No**, they differ", False),  # markdown around the first word
    ("  no", False),  # leading whitespace
    ('"Yes"', True),  # quoted
]


@pytest.mark.parametrize("reply, expected", VERDICT_CASES, ids=[c[0] for c in VERDICT_CASES])
def test_parse_verdict_accepts(reply: str, expected: bool) -> None:
    assert parse_verdict(reply) is expected


@pytest.mark.parametrize(
    "reply",
    [
        "I do not know",  # contains 'no' as a substring: the released code read this as "no"
        "Noted.",  # starts with 'No' but is not the word no
        "Not really",  # 'not' is not 'no'
        "yesterday",  # 'yes' prefix
        "",  # empty reply
        "Maybe",  # neither
    ],
)
def test_parse_verdict_rejects(reply: str) -> None:
    with pytest.raises(JudgeError, match="not yes/no"):
        parse_verdict(reply)


def test_verdict_from_logprobs() -> None:
    import math

    top = [("Yes", math.log(0.6)), (" no", math.log(0.2)), ("Maybe", math.log(0.2))]
    assert verdict_from_logprobs(top) == pytest.approx(0.75)
    assert verdict_from_logprobs([("Maybe", 0.0)]) is None


def test_token_f1_hand_computed() -> None:
    # content tokens: {eggs, sold} vs {eggs, she, sell}: she is a stop word -> {eggs, sell}
    assert token_f1("How many eggs are sold?", "How many eggs does she sell?") == pytest.approx(0.5)
    assert token_f1("", "anything") == 0.0
    assert token_f1("same words here", "here same words") == 1.0


@pytest.mark.parametrize("name", sorted(JUDGES))
def test_registry_builds_every_judge(name: str) -> None:
    kwargs = {"base_url": "http://127.0.0.1:9/v1"} if name == "llm" else {}
    assert get_judge(name, **kwargs).name == name


def test_unknown_judge_and_kind() -> None:
    with pytest.raises(ValueError, match="unknown judge"):
        get_judge("nope")
    with pytest.raises(ValueError, match="unknown part kind"):
        get_judge("lexical").judge_many([("a", "b")], "bogus")  # type: ignore[arg-type]


def test_answers_compared_numerically_by_every_judge() -> None:
    j = get_judge("lexical")
    v = j.judge_many([("$18", "18 dollars"), ("9 eggs", "10 eggs"), ("blue", "blue")], "answer")
    assert [x.match for x in v] == [True, False, True]


def test_llm_judge_over_http_payload_and_strict_parsing() -> None:
    replies = iter(["Yes", "No.", "yes"])

    def reply(body):
        return 200, chat_response(next(replies))

    with openai_stub(reply) as (url, seen):
        judge = LLMJudge(base_url=url, model="judge-model", concurrency=1, logprobs=False)
        verdicts = judge.judge_many([("a", "b"), ("c", "d"), ("e", "f")], "meta")
    assert [v.match for v in verdicts] == [True, False, True]
    assert [v.score for v in verdicts] == [1.0, 0.0, 1.0]
    # the exact payload: pure builder output, greedy, 3 tokens
    assert seen[0]["messages"] == build_judge_messages("meta", "a", "b")
    assert seen[0]["model"] == "judge-model" and seen[0]["temperature"] == 0.0
    assert seen[0]["max_tokens"] == 3


def test_llm_judge_uses_logprobs_when_given() -> None:
    import math

    lp = {"content": [{"token": "Yes", "logprob": math.log(0.9), "bytes": None,
                       "top_logprobs": [{"token": "Yes", "logprob": math.log(0.9), "bytes": None},
                                        {"token": "No", "logprob": math.log(0.1), "bytes": None}]}]}
    with openai_stub(lambda body: (200, chat_response("Yes", logprobs=lp))) as (url, seen):
        (v,) = LLMJudge(base_url=url).judge_many([("a", "b")], "subproblem")
    assert v.match and v.score == pytest.approx(0.9)
    assert seen[0]["logprobs"] is True and seen[0]["top_logprobs"] == 5


def test_llm_judge_unparseable_reply_is_an_error_not_a_no() -> None:
    with openai_stub(lambda body: (200, chat_response("I do not know"))) as (url, _), \
            pytest.raises(JudgeError, match="not yes/no"):
        LLMJudge(base_url=url, logprobs=False).judge_many([("a", "b")], "meta")


def test_llm_judge_server_error_is_an_error() -> None:
    with openai_stub(lambda body: (500, {"error": {"message": "boom"}})) as (url, seen), \
            pytest.raises(JudgeError, match="request failed"):
        LLMJudge(base_url=url, max_retries=1, logprobs=False).judge_many([("a", "b")], "meta")
    assert len(seen) == 2  # one retry, then the failure surfaces


def test_embedding_judge_real_model() -> None:
    pytest.importorskip("sentence_transformers")
    j = get_judge("embedding")
    v = j.judge_many(
        [
            # a close rewording and a looser paraphrase (cosine 0.79) both ask the same
            # question (the sub-problem threshold is 0.62: gsrm/judges.py, "The defaults")
            ("How many eggs does Janet sell each day?", "How many eggs does Janet sell every day?"),
            ("How many eggs does Janet sell each day?", "How many eggs are sold daily?"),
            ("How many eggs does Janet sell each day?", "What is the area of the garden?"),
        ],
        "subproblem",
    )
    assert [x.match for x in v] == [True, True, False]
    assert v[0].score > v[1].score > v[2].score
    # cached embeddings give identical scores on a second call
    assert j.judge_many([("How many eggs does Janet sell each day?",
                          "How many eggs are sold daily?")], "subproblem")[0].score == v[1].score
