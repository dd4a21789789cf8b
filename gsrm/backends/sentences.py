"""``sentences``: a model-free baseline decomposer, one step per sentence.

Why keep it: a reference point for the evaluation and a stand-in that keeps fast tests and
smoke runs free of model weights. It is not a GSRM.
"""

from __future__ import annotations

from collections.abc import Sequence

from gsrm.backends.base import Backend, BackendError, DecomposeItem
from gsrm.prompts import Message
from gsrm.structure import Generation
from gsrm.text import spans_from_starts, split_sentences


class SentenceBackend(Backend):
    """Every sentence of the trace becomes one step.

    Meta-reasoning and sub-problem are both the sentence and the answer is its last number
    (or the sentence); each step's span is its sentence.
    """

    name = "sentences"
    rule_based = True

    @property
    def model_id(self) -> str:
        return "rule-based"

    def generate(
        self, conversations: Sequence[list[Message]], max_new_tokens: int | None = None,
        stop: Sequence[str] | None = None,
    ) -> list[Generation]:
        raise BackendError("the 'sentences' backend only decomposes; it has no chat model")

    def decompose_many(self, items: Sequence[DecomposeItem]) -> list[Generation]:
        from gsrm.judges import answer_number

        out: list[Generation] = []
        for _, reasoning in items:
            lines: list[str] = []
            starts: list[int] = []
            cursor = 0
            for i, sent in enumerate(split_sentences(reasoning), start=1):
                at = reasoning.find(sent, cursor)
                starts.append(at)
                cursor = at + len(sent)
                flat = " ".join(sent.split())
                num = answer_number(sent)
                ans = (f"{num:g}" if num is not None else flat)
                lines += [f"[Meta-reasoning {i}]: {flat}", f"[Sub-problem {i}]: {flat}",
                          f"[Answer {i}]: {ans}"]
            out.append(Generation(text="\n".join(lines), backend=self.name, model=self.model_id,
                                  completion_tokens=len(lines),
                                  spans=spans_from_starts(reasoning, starts[1:])))
        return out
