"""Backends: registry, truncation flags, the openai backend over real HTTP, the real default model."""

from __future__ import annotations

import pytest

from gsrm.backends import (
    BACKENDS,
    Backend,
    BackendError,
    Generation,
    OpenAIBackend,
    get_backend,
)
from gsrm.parse import parse_structure
from gsrm.prompts import build_messages
from gsrm.text import split_sentences
from tests.openai_stub import chat_response, openai_stub


def test_registry() -> None:
    assert {"transformers", "openai", "vllm", "sentences"} <= set(BACKENDS)
    with pytest.raises(ValueError, match="unknown backend"):
        get_backend("nope")


@pytest.mark.parametrize(
    "text, expected",
    [
        # sentence ends followed by a capital
        ("First add. Then multiply.", ["First add.", "Then multiply."]),
        # decimals do not split
        ("It costs 2.5 dollars. So 5 total.", ["It costs 2.5 dollars.", "So 5 total."]),
        # line breaks always split
        ("a\nb", ["a", "b"]),
    ],
)
def test_split_sentences(text: str, expected: list[str]) -> None:
    assert split_sentences(text) == expected


def test_sentence_backend_output_parses() -> None:
    (g,) = get_backend("sentences").decompose_many([("p", "First 2+3 = 5. Then 5*2 = 10.")])
    s = parse_structure(g.text)
    assert [st.answer for st in s.steps] == ["5", "10"]


class EchoBackend(Backend):
    """Counts tokens as words so truncation can be checked exactly."""

    name = "echo"

    def count_tokens(self, text: str) -> int:
        return len(text.split())

    def truncate(self, text: str, max_tokens: int) -> str:
        return " ".join(text.split()[:max_tokens])

    def generate(self, conversations, max_new_tokens=None, stop=None):
        return [Generation(text=c[-1]["content"]) for c in conversations]


def test_input_truncation_is_flagged() -> None:
    prompt_only = sum(len(m["content"].split()) + 8 for m in build_messages("p", "", 0))
    b = EchoBackend(max_input_tokens=prompt_only + 30, shots=0)
    short, long_ = b.decompose_many([("p", "one two three"), ("p", "word " * 500)])
    assert not short.input_truncated and short.text.endswith("one two three")
    assert long_.input_truncated and long_.text.count("word") < 500


def test_truncation_impossible_raises() -> None:
    with pytest.raises(BackendError, match="max_input_tokens"):
        EchoBackend(max_input_tokens=5, shots=0).decompose_many([("p", "x y z")])


def test_openai_backend_over_http() -> None:
    text = "[Meta-reasoning 1]: a\n[Sub-problem 1]: b\n[Answer 1]: c\nSo the final answer is: c"

    def reply(body):
        finish = "length" if "LONG" in body["messages"][-1]["content"] else "stop"
        return 200, chat_response(text, finish_reason=finish, prompt_tokens=40, completion_tokens=20)

    with openai_stub(reply) as (url, seen):
        b = OpenAIBackend(base_url=url, model="gsrm", shots=0, max_new_tokens=77)
        g1, g2 = b.decompose_many([("p", "short"), ("p", "LONG trace")])
    assert g1.text == text and (g1.prompt_tokens, g1.completion_tokens) == (40, 20)
    assert not g1.hit_max_new_tokens and g2.hit_max_new_tokens
    body = next(s for s in seen if "short" in s["messages"][-1]["content"])
    assert body["messages"] == build_messages("p", "short", 0)
    assert body["temperature"] == 0.0 and body["max_tokens"] == 77 and body["model"] == "gsrm"


def test_openai_backend_continues_a_prefilled_reply() -> None:
    # the describer's format repair ends a conversation with an assistant turn to continue;
    # OpenAI-compatible servers that can (vLLM) get the switch for it in the request body
    conv = [*build_messages("p", "span", 0),
            {"role": "assistant", "content": "[Meta-reasoning 1]: m\n[Sub-problem 1]:"}]
    with openai_stub(lambda body: (200, chat_response(" q?"))) as (url, seen):
        g = OpenAIBackend(base_url=url, model="gsrm", shots=0).generate([conv], 16)[0]
    assert g.text == " q?"
    assert seen[0]["messages"][-1] == conv[-1]
    assert seen[0]["continue_final_message"] is True
    assert seen[0]["add_generation_prompt"] is False


def test_local_prompt_ids_leave_a_prefilled_reply_open() -> None:
    from transformers import AutoTokenizer

    from gsrm.backends import TransformersBackend
    from gsrm.weights import default_model_dir

    b = TransformersBackend(threads=1)
    b._tok = AutoTokenizer.from_pretrained(str(default_model_dir()))  # the tokenizer alone
    conv = build_messages("p", "span", 0)
    prefill = "[Meta-reasoning 1]: m\n[Sub-problem 1]:"
    plain = b._prompt_ids(conv)
    cont = b._prompt_ids([*conv, {"role": "assistant", "content": prefill}])
    # why: the continuation starts right after the prefill: the generation prompt, then the
    # prefill's tokens, and no end-of-turn after them
    assert cont[: len(plain)] == plain
    assert b._tok.decode(cont[len(plain):]) == prefill
    # and the prefix cache shares the system prompt with the plain prompts (prefilled rows
    # decode in one batch with them, not one group each)
    b.min_prefix_tokens = 1
    assert b._prefix_ids([*conv, {"role": "assistant", "content": prefill}], cont) \
        == b._prefix_ids(conv, plain) != ()


def test_openai_backend_failure_raises() -> None:
    with openai_stub(lambda body: (503, {"error": {"message": "overloaded"}})) as (url, _):
        b = OpenAIBackend(base_url=url, max_retries=0, shots=0)
        with pytest.raises(BackendError, match="failed"):
            b.decompose_many([("p", "r")])


def test_vllm_backend_is_import_guarded() -> None:
    pytest.importorskip("torch")
    try:
        import vllm  # noqa: F401

        pytest.skip("vllm is installed; the guard is not exercised")
    except ImportError:
        pass
    with pytest.raises(BackendError, match=r"gsrm\[vllm\]"):
        get_backend("vllm").count_tokens("x")


@pytest.mark.slow
def test_transformers_default_model_batched_generation() -> None:
    b = get_backend("transformers", max_new_tokens=24, batch_size=2)
    items = [("What is 2+3?", "First add 2 and 3 to get 5. So the answer is 5."),
             ("What is 4*6?", "Multiply 4 by 6, which gives 24.")]
    batched = b.decompose_many(items)
    for g in batched:
        assert g.prompt_tokens > 0 and 0 < g.completion_tokens <= 24
        assert g.hit_max_new_tokens == (g.completion_tokens == 24)
    # batching (prefix + padding + own tokens) gives the same greedy text as one at a time,
    # and the shared-prefix key/value cache gives the same text as a full prompt pass
    single = [get_backend("transformers", max_new_tokens=24, batch_size=1).decompose_many([it])[0]
              for it in items]
    assert [g.text for g in batched] == [g.text for g in single]
    plain = get_backend("transformers", max_new_tokens=24, batch_size=2, prefix_cache=False)
    assert [g.text for g in plain.decompose_many(items)] == [g.text for g in batched]


@pytest.mark.slow
def test_prompt_lookup_matches_plain_greedy() -> None:
    # prompt lookup runs through model.generate (one row at a time), plain greedy through
    # gsrm.decode; speculation must not change the greedy text
    items = [("What is 2+3?", "First add 2 and 3 to get 5. So the answer is 5.")]
    plain = get_backend("transformers", max_new_tokens=40, batch_size=1).decompose_many(items)
    lookup = get_backend("transformers", max_new_tokens=40, prompt_lookup=3).decompose_many(items)
    assert [g.text for g in lookup] == [g.text for g in plain]
    assert [g.completion_tokens for g in lookup] == [g.completion_tokens for g in plain]


@pytest.mark.parametrize(("adapter", "model", "expect_shipped"), [
    ("auto", None, True),  # the embedded base model gets the shipped fine-tuned adapter
    ("auto", "Qwen/Qwen2.5-7B-Instruct", False),  # another base model: it was not trained for it
    ("none", None, False),  # explicitly the plain base model (the few-shot baseline)
    (None, None, False),  # None means no adapter, as before
])
def test_adapter_resolution_and_shots(adapter: str | None, model: str | None,
                                      expect_shipped: bool) -> None:
    from gsrm.backends import TransformersBackend
    from gsrm.prompts import DEFAULT_SHOTS
    from gsrm.weights import default_adapter_dir

    shipped = default_adapter_dir()
    b = TransformersBackend(model=model, adapter=adapter)
    if expect_shipped and shipped is not None:
        assert b.adapter == str(shipped)
        assert b.shots == 0 or b.shots == ()  # the adapter was trained zero-shot
    elif not expect_shipped:
        assert b.adapter is None
        assert b.shots == DEFAULT_SHOTS
    # an explicit shots value always wins
    assert TransformersBackend(model=model, adapter=adapter, shots=("math",)).shots == ("math",)


def test_explicit_adapter_path_is_kept(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from gsrm.backends import TransformersBackend

    b = TransformersBackend(adapter=str(tmp_path))
    assert b.adapter == str(tmp_path) and b.shots == ()


# --------------------------------------------------------------------------- issue 17, row 11
def test_every_default_path_builds_the_same_engine() -> None:
    # one default everywhere a GSRM is built (the library, the CLI, gsrm-serve, the RL
    # client's --gsrm local, the evaluation): openvino with int8 weights and f32 compute on
    # the CPU; the transformers backend, when chosen, decodes in float32 (batch-invariant;
    # bfloat16 stays an explicit option)
    import argparse

    from eval.cli import build_parser as eval_parser
    from eval.systems import SystemOptions
    from gsrm.backends import TransformersBackend
    from gsrm.cli import build_parser as cli_parser
    from gsrm.model import GSRM
    from rl_client.rewards import LocalScorer
    from server.service import gsrm_from_settings
    from server.settings import Settings

    def engine(b: object) -> tuple[str, str, str]:
        return (b.name, b.weights, b.precision)  # type: ignore[attr-defined]

    default = ("openvino", "int8", "f32")
    assert engine(GSRM().backend) == default
    assert engine(gsrm_from_settings(Settings()).backend) == default
    assert engine(LocalScorer().gsrm.backend) == default
    ns = cli_parser().parse_args(["decompose", "x.json"])
    assert (ns.ov_weights, ns.ov_precision, ns.dtype) == ("int8", "f32", "float32")
    assert ns.ov_kv_cache_gb == 1
    assert TransformersBackend().dtype == "float32"
    ns = eval_parser().parse_args(["run", "--out", "unused"])
    assert isinstance(ns, argparse.Namespace) and ns.dtype == "float32"
    assert (ns.ov_weights, ns.ov_precision) == ("int8", "f32")
    opts = SystemOptions()
    assert (opts.engine, opts.ov_weights, opts.ov_precision, opts.dtype) \
        == ("openvino", "int8", "f32", "float32")


def test_the_kv_cache_size_reaches_the_engine_from_every_front_end() -> None:
    # why: the size is what decides how long shared prompts stay cached (and the engine
    # fault of eval/README.md was not seen with a larger one); each front end must pass it
    from eval.cli import build_parser as eval_parser
    from eval.systems import SystemOptions, _transformers
    from gsrm.backends import OpenVINOBackend, get_backend
    from gsrm.backends.openvino import KV_CACHE_GB
    from gsrm.cli import backend_kwargs
    from gsrm.cli import build_parser as cli_parser
    from server.service import gsrm_from_settings
    from server.settings import Settings

    assert OpenVINOBackend().kv_cache_gb == KV_CACHE_GB == 1
    ns = cli_parser().parse_args(["decompose", "x.json", "--ov-kv-cache-gb", "6"])
    assert get_backend("openvino", **backend_kwargs(ns)).kv_cache_gb == 6  # type: ignore[attr-defined]
    ns = eval_parser().parse_args(["run", "--out", "unused", "--ov-kv-cache-gb", "5"])
    assert ns.ov_kv_cache_gb == 5
    assert _transformers(SystemOptions(ov_kv_cache_gb=5)).kv_cache_gb == 5  # type: ignore[attr-defined]
    backend = gsrm_from_settings(Settings(ov_kv_cache_gb=4)).backend
    assert backend.kv_cache_gb == 4  # type: ignore[attr-defined]
    for bad in (0, 1.5):
        with pytest.raises(ValueError, match="kv_cache_gb"):
            OpenVINOBackend(kv_cache_gb=bad)  # type: ignore[arg-type]


@pytest.mark.slow
def test_float32_decoding_is_batch_invariant() -> None:
    """The same trace gets the same decomposition, hence the same reward, alone or batched
    with other traces of other lengths (padding, continuous-batching refills, the shared
    prefix cache), on the transformers backend in float32 (the choice for rewards that must
    not depend on the batch; the openvino default's int8 kernels do, a little: README). In
    bfloat16 the eval README measured outputs shifting with the batch."""
    from gsrm.judges import LexicalJudge
    from gsrm.model import GSRM
    from gsrm.structure import Step

    problem = "Janet's ducks lay 16 eggs per day. How much does she make every day?"
    trace = ("Janet's ducks lay 16 eggs. She eats 3 for breakfast and bakes muffins with 4, "
             "so she uses 3 + 4 = 7 eggs. She sells the remainder: 16 - 7 = 9 eggs. Each egg "
             "sells for $2, so she makes 9 * 2 = $18 every day.")
    robe = ("It takes 2/2 = 1 bolt of white fiber. So the total is 2 + 1 = 3 bolts.")
    house = ("The cost of the house and repairs came out to 80,000 + 50,000 = $130,000. He "
             "increased the value of the house by 80,000 * 1.5 = 120,000. So the new value of "
             "the house is 120,000 + 80,000 = $200,000. So he made a profit of 200,000 - "
             "130,000 = $70,000.")
    glasses = ("The discount price of one glass is 60/100 * 5 = $3. If every second glass is "
               "cheaper, that means Kylar is going to buy 16 / 2 = 8 cheaper glasses. So for "
               "the cheaper glasses, Kylar is going to pay 8 * 3 = $24. And for the "
               "regular-priced glasses, Kylar will pay 8 * 5 = $40. So in total Kylar needs to "
               "pay 24 + 40 = $64 for the glasses he wants to buy.")
    others = [  # other lengths: shorter and longer prompts than the trace, both sides of it
        ("How many bolts in total?", robe), ("What is his profit?", house),
        ("How many meters a week?", "He sprints 3 * 3 = 9 times. So he runs 9 * 60 = 540 m."),
        ("What is 2 + 3, doubled?", "2 + 3 = 5. Doubled, 10."),
        ("How much does he pay?", glasses),
    ]
    teacher = [Step(meta="Count the eggs she sells first.", subproblem="How many eggs does "
                    "she sell?", answer="9"),
               Step(meta="Then the money.", subproblem="How much does she make?", answer="18")]

    def fresh() -> GSRM:  # a new GSRM each time: nothing comes from a cache
        return GSRM(judge=LexicalJudge(), backend=get_backend("transformers",
                                                              max_new_tokens=160))

    alone = fresh().decompose(problem, trace)
    batch = fresh().decompose_many(others[:2] + [(problem, trace)] + others[2:])
    assert batch[2].raw == alone.raw
    assert batch[2].model_dump(exclude={"generation"}) == alone.model_dump(exclude={"generation"})
    r_alone = fresh().score(problem, teacher, trace)
    r_batch = fresh().score_many([(p, teacher, t) for p, t in others] + [(problem, teacher,
                                                                            trace)])
    assert r_batch[-1].reward == r_alone.reward
    assert r_batch[-1].step_rewards == r_alone.step_rewards
