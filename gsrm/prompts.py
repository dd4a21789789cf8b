"""The canonical decomposition prompt: one tag set, few-shot examples per domain.

Why one module: the same prompt text is used to generate decompositions (every backend), to
build SFT training data (training/), and by the server's chat endpoint, so a change here moves
all of them together. The tags are the canonical ``[Meta-reasoning i]`` / ``[Sub-problem i]`` /
``[Answer i]`` (the released RLKD code prompted ``[Meat-reasoning i]`` but parsed
``[sub-think i]``; ``gsrm.parse`` still accepts those spellings from other models).

Example::

    >>> from gsrm.prompts import build_messages
    >>> msgs = build_messages("What is 2+3?", "2 plus 3 is 5.", shots=0)
    >>> [m["role"] for m in msgs]
    ['system', 'user']
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from gsrm.structure import Structure

SYSTEM_PROMPT = """You rewrite a reasoning trace into numbered steps. Follow the trace's own order \
and content; do not solve the problem yourself and do not add steps the trace does not take.
For each step write exactly three lines:
[Meta-reasoning i]: why this sub-problem is the one to solve next, given what is known so far. \
Do not state its answer here.
[Sub-problem i]: the single question this step answers.
[Answer i]: the brief answer to that question, without reasoning.
After the last step write one line: So the final answer is: <answer>"""

USER_TEMPLATE = "Problem:\n{problem}\n\nReasoning to decompose:\n{reasoning}"

DEFAULT_SHOTS: tuple[str, ...] = ("math", "puzzle")
"""Few-shot domains used with the base model; a fine-tuned adapter is prompted with none."""

Message = dict[str, str]


@dataclass(frozen=True)
class FewShot:
    """One worked example: a problem, a raw trace, and its canonical decomposition."""

    domain: str
    problem: str
    reasoning: str
    structure: Structure


def render_structure(structure: Structure) -> str:
    """Render a Structure in the canonical tag format (what the GSRM is trained to output)."""
    lines: list[str] = []
    for i, step in enumerate(structure.steps, start=1):
        lines.append(f"[Meta-reasoning {i}]: {step.meta.strip()}")
        lines.append(f"[Sub-problem {i}]: {step.subproblem.strip()}")
        lines.append(f"[Answer {i}]: {step.answer.strip()}")
    if structure.final_answer is not None and structure.final_answer.strip():
        lines.append(f"So the final answer is: {structure.final_answer.strip()}")
    return "\n".join(lines)


def user_message(problem: str, reasoning: str) -> str:
    """The user turn that asks for a decomposition of ``reasoning``."""
    return USER_TEMPLATE.format(problem=problem.strip(), reasoning=reasoning.strip())


def few_shots(shots: Sequence[str] | int) -> list[FewShot]:
    """Resolve ``shots`` (domain names, or a count taken from DEFAULT order) to examples."""
    from gsrm.fewshot import FEW_SHOTS

    if isinstance(shots, int):
        order = list(DEFAULT_SHOTS) + [d for d in FEW_SHOTS if d not in DEFAULT_SHOTS]
        names = order[: max(0, shots)]
    else:
        names = list(shots)
    unknown = [n for n in names if n not in FEW_SHOTS]
    if unknown:
        raise KeyError(f"unknown few-shot domain(s) {unknown}; known: {sorted(FEW_SHOTS)}")
    return [FEW_SHOTS[n] for n in names]


def build_messages(
    problem: str, reasoning: str, shots: Sequence[str] | int = DEFAULT_SHOTS
) -> list[Message]:
    """Chat messages asking the GSRM to decompose ``reasoning`` (system, shots, then the query)."""
    messages: list[Message] = [{"role": "system", "content": SYSTEM_PROMPT}]
    for shot in few_shots(shots):
        messages.append({"role": "user", "content": user_message(shot.problem, shot.reasoning)})
        messages.append({"role": "assistant", "content": render_structure(shot.structure)})
    messages.append({"role": "user", "content": user_message(problem, reasoning)})
    return messages
