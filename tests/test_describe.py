"""Two-stage decomposition (segment, then describe each span) through GSRM, with a fake LM."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest

from gsrm.backends import Backend, Generation
from gsrm.backends.safeguards import cut_at_stop
from gsrm.describe import (
    AT_BUDGET_WARNING,
    BUDGET_WARNING,
    DESCRIBE_STOP,
    REPAIR_MAX_NEW_TOKENS,
    RESET_AFTER_NO_STEP,
    RESTART_NOTE,
    describe_many,
    first_step,
    repair_prefix,
    span_text,
)
from gsrm.model import GSRM
from gsrm.segment import get_segmenter
from gsrm.spanformat import PREVIOUS_HEADING


class EchoLM(Backend):
    """Describes a span by echoing its first words; records every batch and its stop list."""

    name = "echo"
    describes_spans = True

    def __init__(self, reply: str | None = None) -> None:
        super().__init__(shots=0)
        self.calls: list[tuple[int, int | None, tuple[str, ...]]] = []
        self.reply = reply

    @property
    def model_id(self) -> str:
        return "echo-lm"

    #: completion tokens reported per generation
    tokens = 9

    def reply_to(self, conv: list[dict[str, str]]) -> str:
        span = conv[-1]["content"].split("Reasoning to decompose:\n", 1)[1]
        return self.reply if self.reply is not None else (
            f"[Meta-reasoning 1]: Do {span[:12]}\n[Sub-problem 1]: What is {span[:12]}?\n"
            f"[Answer 1]: {len(span)}\n[Meta-reasoning 2]: more")

    def generate(self, conversations: Sequence[list[dict[str, str]]],
                 max_new_tokens: int | None = None,
                 stop: Sequence[str] | None = None) -> list[Generation]:
        self.calls.append((len(conversations), max_new_tokens, tuple(stop or ())))
        return [Generation(text=cut_at_stop(self.reply_to(conv), stop or ())[0],
                           completion_tokens=self.tokens, prompt_tokens=30)
                for conv in conversations]


TRACE = "Add 2 and 3. So we get 5. Wait, check it: 2 + 3 = 5. Yes."


def test_every_span_of_every_trace_is_described_in_one_batch() -> None:
    lm = EchoLM()
    g = GSRM(backend=lm, segmenter=get_segmenter("units"))
    a, b = g.decompose_many([("p", TRACE), ("q", "One step only")])
    # why: the spans decode as one batch, with the describer's budget and stop strings
    assert lm.calls == [(5, g.describe_max_new_tokens, DESCRIBE_STOP)]
    assert [TRACE[s.span[0]:s.span[1]] for s in a.steps] == [
        "Add 2 and 3.", "So we get 5.", "Wait, check it: 2 + 3 = 5.", "Yes."]
    assert a.steps[0].subproblem == "What is Add 2 and 3.?" and a.steps[0].answer == "12"
    assert b.n_steps == 1 and b.steps[0].span == (0, 13)
    assert a.generation is not None and a.generation.completion_tokens == 4 * 9


@pytest.mark.parametrize(("items", "batch", "tokens"), [
    # a trace and its copy: every span described once, the copy decodes nothing
    ([("p", TRACE), ("p", TRACE)], 4, [4 * 9, 0]),
    # a perturbed copy shares its first two steps with the original
    ([("p", TRACE), ("p", "Add 2 and 3. So we get 5. Wait, 2 + 3 = 6.")], 5, [4 * 9, 9]),
    # the same text under another problem is another prompt
    ([("p", TRACE), ("q", TRACE)], 8, [4 * 9, 4 * 9]),
])
def test_identical_span_prompts_are_described_once(items: list[tuple[str, str]], batch: int,
                                                   tokens: list[int]) -> None:
    lm = EchoLM()
    spans = get_segmenter("units").segment_many([text for _, text in items])
    got = describe_many(lm, [(p, r, ss) for (p, r), ss in zip(items, spans, strict=True)])
    assert [c[0] for c in lm.calls] == [batch]
    assert [s.generation.completion_tokens for s in got if s.generation] == tokens
    # why: a step's description depends on its prompt only, never on its batch slot
    shared = [(a, b) for a, b in zip(got[0].steps, got[1].steps, strict=False)
              if TRACE[a.span[0]:a.span[1]] == items[1][1][b.span[0]:b.span[1]]]
    assert all(a == b for a, b in shared) and len(shared) >= 2
    assert [[st.span for st in s.steps] for s in got] == spans
    assert all(st.is_complete for s in got for st in s.steps)


class PreviousEchoLM(EchoLM):
    """EchoLM for a describer trained with the previous span in its prompt; keeps every
    conversation it was asked for."""

    span_format = "tags-prev"

    def __init__(self) -> None:
        super().__init__()
        self.convs: list[list[dict[str, str]]] = []

    def reply_to(self, conv: list[dict[str, str]]) -> str:
        self.convs.append(conv)
        return super().reply_to(conv)


@pytest.mark.parametrize(("lm_class", "batch"), [
    # "C." follows "B." in one trace and "X." in the other: with the previous span shown
    # those are two prompts, without it one
    (PreviousEchoLM, 5),
    (EchoLM, 4),
])
def test_a_previous_format_shows_each_span_the_one_before_it(lm_class: type[EchoLM],
                                                             batch: int) -> None:
    lm = lm_class()
    items = [("p", "A is 1. B is 2. C is 3."), ("p", "A is 1. X is 9. C is 3.")]
    spans = get_segmenter("units").segment_many([text for _, text in items])
    got = describe_many(lm, [(p, r, ss) for (p, r), ss in zip(items, spans, strict=True)])
    assert [c[0] for c in lm.calls] == [batch]
    assert all(st.is_complete for s in got for st in s.steps)
    if not isinstance(lm, PreviousEchoLM):
        return
    users = {c[-1]["content"].rsplit("\n", 1)[1]: c[-1]["content"] for c in lm.convs}
    assert PREVIOUS_HEADING not in users["A is 1."]  # a trace's first span has none
    assert f"{PREVIOUS_HEADING}\nA is 1.\n\n" in users["B is 2."]
    # every span is still described in the one batch: the previous span's *text* is shown
    assert sorted(c[-1]["content"].split(f"{PREVIOUS_HEADING}\n")[-1].split("\n")[0]
                  for c in lm.convs if PREVIOUS_HEADING in c[-1]["content"]) == [
        "A is 1.", "A is 1.", "B is 2.", "X is 9."]


def test_two_stage_and_single_pass_have_different_cache_keys() -> None:
    lm = EchoLM()
    two = GSRM(backend=lm, segmenter=get_segmenter("units"))
    one = GSRM(backend=lm, segmenter=get_segmenter("units"), decomposer="single-pass")
    cues = GSRM(backend=lm, segmenter=get_segmenter("cues"))
    keys = {two.cache_key("p", TRACE), one.cache_key("p", TRACE), cues.cache_key("p", TRACE)}
    assert len(keys) == 3


def test_an_unparsable_description_keeps_its_span_and_says_so() -> None:
    lm = EchoLM(reply="I cannot do that.")
    g = GSRM(backend=lm, segmenter=get_segmenter("units"))
    s = g.decompose("p", "First. Second.")
    assert [st.span for st in s.steps] == [(0, 6), (7, 14)]
    assert all(not st.is_complete for st in s.steps)
    assert s.warnings == [w for k in (1, 2) for w in (
        (f"step {k}: the describer's first completion had no step (it began 'I cannot do "
         "that.'); described again"),
        f"step {k}: no step could be parsed from the describer's completion")]
    # why: described again once in a fresh batch (the same text here), and both calls counted
    assert [c[:2] for c in lm.calls] == [(2, g.describe_max_new_tokens)] * 2
    assert s.generation is not None and s.generation.completion_tokens == 2 * 2 * 9


class FaultyUntilResetLM(EchoLM):
    """Returns garbage for every span of a batch from its second on until ``reset`` (as the
    OpenVINO pipeline's fault did: every completion from one point of a call on, and in the
    same pipeline some of them again)."""

    def __init__(self) -> None:
        super().__init__()
        self.resets = 0

    def reset(self) -> bool:
        self.resets += 1
        return True

    def generate(self, conversations: Sequence[list[dict[str, str]]],
                 max_new_tokens: int | None = None,
                 stop: Sequence[str] | None = None) -> list[Generation]:
        out = super().generate(conversations, max_new_tokens, stop)
        if not self.resets:
            out[1:] = [g.model_copy(update={"text": "</s>## ##"}) for g in out[1:]]
        return out


def test_spans_with_no_step_are_described_again_on_a_restarted_engine() -> None:
    lm = FaultyUntilResetLM()
    g = GSRM(backend=lm, segmenter=get_segmenter("units"))
    got = g.decompose_many([("p", TRACE), ("q", "One step only")])
    want = GSRM(backend=EchoLM(), segmenter=get_segmenter("units")).decompose_many(
        [("p", TRACE), ("q", "One step only")])
    assert [c[:2] for c in lm.calls] == [(5, g.describe_max_new_tokens),
                                         (4, g.describe_max_new_tokens)]
    # why: retried in the same engine, three of the four would have failed again
    assert lm.resets == 1
    assert [s.steps for s in got] == [s.steps for s in want]
    # why: the warning quotes what the engine wrote instead (the evidence of a fault)
    again = ("the describer's first completion had no step (it began '</s>## ##'); "
             f"described again {RESTART_NOTE}")
    assert got[0].warnings == [f"step {k}: {again}" for k in (2, 3, 4)]
    assert got[1].warnings == [f"step 1: {again}"]
    assert got[0].generation is not None and got[0].generation.completion_tokens == 7 * 9


class OneStepLessLM(FaultyUntilResetLM):
    """Returns garbage for the second span of its first batch only."""

    def generate(self, conversations: Sequence[list[dict[str, str]]],
                 max_new_tokens: int | None = None,
                 stop: Sequence[str] | None = None) -> list[Generation]:
        out = EchoLM.generate(self, conversations, max_new_tokens, stop)
        if len(self.calls) == 1:
            out[1] = out[1].model_copy(update={"text": "</s>## ##"})
        return out


class HalfFaultyUntilResetLM(FaultyUntilResetLM):
    """From the third span of a batch on, until ``reset``: every other completion has no
    step, the others describe another problem's step (they parse), as the real fault did."""

    batch_size = 1  # one prompt in flight: the one before the first step-less one is suspect

    def generate(self, conversations: Sequence[list[dict[str, str]]],
                 max_new_tokens: int | None = None,
                 stop: Sequence[str] | None = None) -> list[Generation]:
        out = EchoLM.generate(self, conversations, max_new_tokens, stop)
        if not self.resets:
            wrong = "[Meta-reasoning 1]: Count apples.\n[Sub-problem 1]: How many?\n[Answer 1]: 3"
            for k in range(2, len(out)):
                out[k] = out[k].model_copy(update={"text": "" if k % 2 else wrong})
        return out


def test_after_a_restart_every_description_from_the_fault_on_is_written_again() -> None:
    lm = HalfFaultyUntilResetLM()
    spans = [(0, 12), (13, 25), (26, 52), (53, 57)]
    [got, got2] = describe_many(lm, [("p", TRACE, spans), ("q", TRACE, spans[:2])])
    [want, want2] = describe_many(EchoLM(), [("p", TRACE, spans), ("q", TRACE, spans[:2])])
    assert lm.resets == 1 and [c[0] for c in lm.calls] == [6, 4]
    # why: prompt 4's wrong step parsed, and prompt 2's too, in flight when the first
    # step-less one (3) began; both are written again; prompts 0 and 1 are kept
    assert got.steps == want.steps and got2.steps == want2.steps
    after = (f"the describer's first completion came after the engine's first step-less one; "
             f"described again {RESTART_NOTE}")
    no_step = (f"the describer's first completion had no step (it was empty); "
               f"described again {RESTART_NOTE}")
    assert got.warnings == [f"step 3: {after}", f"step 4: {no_step}"]
    assert got2.warnings == [f"step 1: {after}", f"step 2: {no_step}"]


@pytest.mark.parametrize(("lm", "resets"), [(OneStepLessLM(), 0), (FaultyUntilResetLM(), 1)])
def test_the_engine_restarts_only_from_restart_after_no_step_spans(
        lm: FaultyUntilResetLM, resets: int) -> None:
    # why: a restart costs a model load; one odd completion does not justify it
    assert RESET_AFTER_NO_STEP == 2
    [s] = describe_many(lm, [("p", TRACE, [(0, 12), (13, 25), (26, 52), (53, 57)])])
    assert lm.resets == resets
    assert all(st.is_complete for st in s.steps)
    assert s.warnings[0].endswith(RESTART_NOTE if resets else "); described again")


class LoopsOnceLM(EchoLM):
    """Runs the first batch's second span to its budget inside the answer (as a formula
    restated in a loop does), then is fine."""

    def generate(self, conversations: Sequence[list[dict[str, str]]],
                 max_new_tokens: int | None = None,
                 stop: Sequence[str] | None = None) -> list[Generation]:
        out = super().generate(conversations, max_new_tokens, stop)
        if len(self.calls) == 1:
            out[1] = out[1].model_copy(update={
                "text": "[Meta-reasoning 1]: m\n[Sub-problem 1]: q = 1 + 1 + 1 + 1 + 1 +",
                "hit_max_new_tokens": True})
        return out


def test_a_description_cut_by_the_budget_is_described_again_without_the_repair_past_it(
) -> None:
    lm = LoopsOnceLM()
    [s] = describe_many(lm, [("p", "First. Second. Third.", [(0, 6), (7, 14), (15, 21)])],
                        repair_at_budget=False)
    assert [c[0] for c in lm.calls] == [3, 1]
    assert all(st.is_complete for st in s.steps)
    why = "stopped at the token budget"
    assert s.warnings == [f"step 2: the describer's first completion {why}; described again"]
    assert s.generation is not None and not s.generation.hit_max_new_tokens


class AlwaysLoopsLM(LoopsOnceLM):
    """Runs the second span of every batch it gets to its budget (the retry too)."""

    def generate(self, conversations: Sequence[list[dict[str, str]]],
                 max_new_tokens: int | None = None,
                 stop: Sequence[str] | None = None) -> list[Generation]:
        out = EchoLM.generate(self, conversations, max_new_tokens, stop)
        k = 1 if len(out) > 1 else 0
        out[k] = out[k].model_copy(update={
            "text": "[Meta-reasoning 1]: m\n[Sub-problem 1]: q = 1 + 1 +",
            "hit_max_new_tokens": True})
        return out


def test_a_span_still_cut_after_its_retry_is_counted_once_by_the_summary_warning() -> None:
    [s] = describe_many(AlwaysLoopsLM(), [("p", "First. Second.", [(0, 6), (7, 14)])],
                        repair_at_budget=False)
    assert not s.steps[1].is_complete and s.generation is not None
    assert s.generation.hit_max_new_tokens
    # why: scripts count cut spans from the summary; the retry's warning names the budget too
    assert [w for w in s.warnings if w.endswith(f" {BUDGET_WARNING}")] == [
        f"1 {BUDGET_WARNING}"]
    assert s.warnings[0] == ("step 2: the describer's first completion stopped at the token "
                             "budget; described again")


class CopiesAtBudgetLM(EchoLM):
    """Copies a long formula into the second span's sub-problem until the budget cuts it (the
    same text every time, as greedy decoding does); answers a prefilled answer header with
    ``answer`` (or, when None, runs that to its budget with nothing written)."""

    cut = "[Meta-reasoning 1]: Find $s = w + x$\n[Sub-problem 1]: Find $s = w + x + y + z$ whe"

    def __init__(self, answer: str | None = " the roots $w,x,y,z$", tail: str = "") -> None:
        super().__init__()
        self.answer = answer
        self.tail = tail  # what the budget left after the sub-problem (a header, or its start)

    def generate(self, conversations: Sequence[list[dict[str, str]]],
                 max_new_tokens: int | None = None,
                 stop: Sequence[str] | None = None) -> list[Generation]:
        self.calls.append((len(conversations), max_new_tokens, tuple(stop or ())))
        out = []
        for conv in conversations:
            if conv[-1]["role"] == "assistant":
                assert conv[-1]["content"] == f"{self.cut}\n[Answer 1]:"
                text, budget = (self.answer, False) if self.answer is not None else ("", True)
            elif "Second." in conv[-1]["content"]:
                text, budget = self.cut + self.tail, True
            else:
                text, budget = cut_at_stop(self.reply_to(conv), stop or ())[0], False
            out.append(Generation(text=text, completion_tokens=self.tokens, prompt_tokens=30,
                                  hit_max_new_tokens=budget))
        return out


def test_a_description_cut_by_the_budget_is_continued_after_the_cut() -> None:
    lm = CopiesAtBudgetLM()
    [s] = describe_many(lm, [("p", "First. Second. Third.", [(0, 6), (7, 14), (15, 21)])],
                        max_new_tokens=100)
    # why: a fresh retry writes the same copy again; one short continuation finishes the step
    assert [c[:2] for c in lm.calls] == [(3, 100), (1, REPAIR_MAX_NEW_TOKENS)]
    assert all(st.is_complete for st in s.steps)
    assert (s.steps[1].subproblem, s.steps[1].answer) == (
        "Find $s = w + x + y + z$ whe", "the roots $w,x,y,z$")
    assert s.warnings == [(f"step 2: {AT_BUDGET_WARNING} (100) before its step was complete; "
                           "its missing parts were asked for after the cut")]
    assert s.generation is not None and not s.generation.hit_max_new_tokens


@pytest.mark.parametrize("tail", ["\n[Answer 1]:", "\n[Answer 1", "\n[Ans", "\n["])
def test_a_header_the_budget_cut_is_written_whole_and_continued(tail: str) -> None:
    # why: a formula restated twice can end the budget at the answer's tag; described again,
    # greedy decoding writes the same, so without this the step kept no answer
    lm = CopiesAtBudgetLM(tail=tail)
    [s] = describe_many(lm, [("p", "First. Second.", [(0, 6), (7, 14)])], max_new_tokens=100)
    assert [c[:2] for c in lm.calls] == [(2, 100), (1, REPAIR_MAX_NEW_TOKENS)]
    assert s.steps[1].is_complete and s.steps[1].answer == "the roots $w,x,y,z$"
    assert s.warnings == [(f"step 2: {AT_BUDGET_WARNING} (100) before its step was complete; "
                           "its missing parts were asked for after the cut")]


def test_a_header_the_model_left_empty_is_not_continued() -> None:
    # why: without a budget cut an empty part is the model's own choice; the same prompt
    # would write the same nothing, so no continuation is paid for it
    [s] = describe_many(EchoLM(reply="[Meta-reasoning 1]: m\n[Sub-problem 1]: q?\n[Answer 1]:"),
                        [("p", "First.", [(0, 6)])])
    assert s.steps[0].answer == "" and s.warnings == [
        "step 1: the describer's step is missing a part"]


def test_a_continuation_cut_by_its_budget_too_is_described_again() -> None:
    lm = CopiesAtBudgetLM(answer=None)
    [s] = describe_many(lm, [("p", "First. Second.", [(0, 6), (7, 14)])], max_new_tokens=100)
    assert [c[:2] for c in lm.calls] == [(2, 100), (1, REPAIR_MAX_NEW_TOKENS), (1, 100),
                                         (1, REPAIR_MAX_NEW_TOKENS)]
    assert s.steps[1].answer == "" and s.generation is not None
    assert s.generation.hit_max_new_tokens
    assert s.warnings == [("step 2: the describer's first completion stopped at the token "
                           "budget; described again"),
                          "step 2: the describer's step is missing a part", f"1 {BUDGET_WARNING}"]


def test_the_retry_can_be_turned_off() -> None:
    lm = FaultyUntilResetLM()
    [s] = describe_many(lm, [("p", "First. Second.", [(0, 6), (7, 14)])], retry_rounds=0)
    assert len(lm.calls) == 1 and lm.resets == 0
    assert s.steps[0].is_complete and not s.steps[1].is_complete


def test_rule_backends_keep_their_own_steps_with_spans() -> None:
    g = GSRM.from_names(backend="sentences", judge="lexical")
    s = g.decompose("p", TRACE)
    assert s.n_steps == 4 and s.steps[0].span == (0, 12)


@pytest.mark.parametrize(("text", "want"), [
    # a complete first step, the second cut off
    ("[Meta-reasoning 1]: m\n[Sub-problem 1]: q?\n[Answer 1]: 5\n[Meta-reasoning 2]: x",
     ("m", "q?", "5")),
    # the budget ended inside the next header: it is not part of the answer
    ("[Meta-reasoning 1]: m\n[Sub-problem 1]: q?\n[Answer 1]: 5\n[Meta", ("m", "q?", "5")),
    # nothing parsable: empty parts
    ("no tags here", ("", "", "")),
])
def test_first_step(text: str, want: tuple[str, str, str]) -> None:
    step, _ = first_step(text)
    assert (step.meta, step.subproblem, step.answer) == want


def test_long_spans_are_elided_in_the_middle() -> None:
    text = "a" * 50 + "b" * 50
    assert span_text(text, (0, 100), limit=20) == "a" * 10 + " … " + "b" * 10


@pytest.mark.parametrize(("text", "want"), [
    # ended after the meta-reasoning line: continue with the sub-problem's tag
    ("[Meta-reasoning 1]: Find $x$", "[Meta-reasoning 1]: Find $x$\n[Sub-problem 1]:"),
    # ended after the sub-problem line (trailing blank dropped): the answer's tag
    ("[Meta-reasoning 1]: m\n[Sub-problem 1]: q?\n",
     "[Meta-reasoning 1]: m\n[Sub-problem 1]: q?\n[Answer 1]:"),
    # a part's tag is there with no words: a tag cannot fix that
    ("[Meta-reasoning 1]: m\n[Sub-problem 1]:", None),
    ("[Meta-reasoning 1]: m\n[Sub-problem 1]: q?\n[Answer 1]:", None),
    # complete, or nothing to continue from
    ("[Meta-reasoning 1]: m\n[Sub-problem 1]: q?\n[Answer 1]: 5", None),
    ("I cannot do that.", None),
])
def test_repair_prefix(text: str, want: str | None) -> None:
    assert repair_prefix(text) == want


@pytest.mark.parametrize(("text", "want"), [
    # the budget cut inside the answer's tag, or right after it: the tag is written whole
    ("[Meta-reasoning 1]: m\n[Sub-problem 1]: q?\n[Answer 1",
     "[Meta-reasoning 1]: m\n[Sub-problem 1]: q?\n[Answer 1]:"),
    ("[Meta-reasoning 1]: m\n[Sub-problem 1]: q?\n[Answer 1]:",
     "[Meta-reasoning 1]: m\n[Sub-problem 1]: q?\n[Answer 1]:"),
    ("[Meta-reasoning 1]: m\n[Sub-pro", "[Meta-reasoning 1]: m\n[Sub-problem 1]:"),
    # cut inside a part's words: the words stay, the next tag follows
    ("[Meta-reasoning 1]: m\n[Sub-problem 1]: q = 1 +",
     "[Meta-reasoning 1]: m\n[Sub-problem 1]: q = 1 +\n[Answer 1]:"),
    # a part with words is never dropped, even where they could start a tag
    ("[Meta-reasoning 1]: m\n[Sub-problem 1]: q?\n[Answer 1]: 5", None),
])
def test_repair_prefix_after_a_budget_cut(text: str, want: str | None) -> None:
    assert repair_prefix(text, cut=True) == want


class StopsEarlyLM(EchoLM):
    """Ends its turn after the meta-reasoning line; continues a prefilled turn properly."""

    tokens = 5

    def reply_to(self, conv: list[dict[str, str]]) -> str:
        last = conv[-1]
        if last["role"] != "assistant":
            return "[Meta-reasoning 1]: Find $x$"
        if last["content"].endswith("[Sub-problem 1]:"):
            return " What is $x$?"  # and ends its turn again
        return " 7\n[Meta-reasoning 2]: more"


def test_a_description_that_ends_early_is_continued_with_the_next_tag() -> None:
    lm = StopsEarlyLM()
    g = GSRM(backend=lm, segmenter=get_segmenter("units"))
    s = g.decompose("p", "First. Second.")
    # why: two repair rounds (sub-problem, then answer), each batched, each with its own budget
    assert [c[:2] for c in lm.calls] == [(2, g.describe_max_new_tokens),
                                         (2, REPAIR_MAX_NEW_TOKENS), (2, REPAIR_MAX_NEW_TOKENS)]
    assert [(st.meta, st.subproblem, st.answer) for st in s.steps] == [
        ("Find $x$", "What is $x$?", "7")] * 2
    assert s.warnings == [] and s.generation is not None
    assert s.generation.completion_tokens == 2 * 3 * 5


@pytest.mark.parametrize("setting", ["REPAIR_ROUNDS", "REPAIR_MAX_NEW_TOKENS", "RETRY_ROUNDS",
                                     "REPAIR_AT_BUDGET", "REPAIR_CUT_HEADER"])
def test_the_repair_and_retry_are_in_the_cache_identity(monkeypatch: pytest.MonkeyPatch,
                                                        setting: str) -> None:
    g = GSRM(backend=EchoLM(), segmenter=get_segmenter("units"))
    before = g.cache_key("p", TRACE)
    monkeypatch.setattr(f"gsrm.describe.{setting}", 7)
    assert g.cache_key("p", TRACE) != before


def _kw(**kw: Any) -> dict[str, Any]:
    return kw


def test_unknown_decomposer_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown decomposer"):
        GSRM(**_kw(decomposer="three-stage"))


class CachingEchoLM(EchoLM):
    """An EchoLM with the describer's prefix warm-up on (``Backend.prefix_warmup``)."""

    prefix_warmup = True


@pytest.mark.parametrize(("items", "warm_calls"), [
    # two traces of one problem (a GRPO group): its prompt prefix is prefilled once, first
    ([("p", TRACE), ("p", "One step only")], [(1, 1, ())]),
    # two problems, several spans each: one warm-up prompt per problem
    ([("p", TRACE), ("q", TRACE)], [(2, 1, ())]),
    # one span per problem: nothing is shared, so nothing is warmed
    ([("p", "One step only"), ("q", "Another one")], []),
])
def test_shared_problem_prefixes_are_prefilled_once_before_the_batch(
        items: list[tuple[str, str]], warm_calls: list[tuple[int, int, tuple[str, ...]]]) -> None:
    lm = CachingEchoLM()
    g = GSRM(backend=lm, segmenter=get_segmenter("units"))
    got = g.decompose_many(items)
    n_spans = sum(s.n_steps for s in got)
    assert lm.calls == [*warm_calls, (n_spans, g.describe_max_new_tokens, DESCRIBE_STOP)]
    # why: warming changes what the engine has cached, never what is described
    plain = GSRM(backend=EchoLM(), segmenter=get_segmenter("units")).decompose_many(items)
    assert [s.steps for s in got] == [s.steps for s in plain]
    assert [s.generation for s in got] == [s.generation for s in plain]
