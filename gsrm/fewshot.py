"""Hand-written few-shot decomposition examples, one per domain (math, code, science, puzzle).

Why these exist: the default GSRM is a 135M base model that has never seen the
``[Meta-reasoning i]`` / ``[Sub-problem i]`` / ``[Answer i]`` format, so without a worked
example it drifts (numbered lists, restated reasoning, answers inside the meta line). Each
example shows the three things the format needs and a small model gets wrong most often:
the steps follow the trace's *own* order (including its "Wait" checks), the meta line says
why the step is next without giving its answer, and the answer is a bare number or phrase.
The paper prompted per domain (math, code, science, puzzle); these are our own, written for
this project, and deliberately short (trace <= 120 words, rendered structure <= 150 words)
because the default model's context is small and it decodes slowly on CPU. The same
examples seed the SFT prompts in ``training/``; ``tests/test_examples.py`` checks that each
renders and parses back to the same steps.

Example::

    >>> from gsrm.fewshot import FEW_SHOTS
    >>> sorted(FEW_SHOTS)
    ['code', 'math', 'puzzle', 'science']
    >>> FEW_SHOTS["puzzle"].structure.final_answer
    'Cal'
"""

from __future__ import annotations

from gsrm.prompts import FewShot
from gsrm.structure import Step, Structure

_MATH = FewShot(
    domain="math",
    problem=(
        "A bakery makes 48 muffins. It sells three quarters of them in the morning and half "
        "of the rest in the afternoon. How many muffins are left at closing?"
    ),
    reasoning=(
        "First, the morning sales: three quarters of 48 is 36 muffins. So after the morning "
        "there are 48 - 36 = 12 muffins left. Next, half of those 12 sell in the afternoon, "
        "which is 6. Wait, the question asks how many are left, not how many sold, so I "
        "subtract again: 12 - 6 = 6 muffins at closing."
    ),
    structure=Structure(
        steps=[
            Step(
                meta="The afternoon sales depend on what the morning leaves, so the morning sales come first.",
                subproblem="How many muffins are sold in the morning?",
                answer="36",
            ),
            Step(
                meta="With the morning sales known, the stock left after the morning is needed before taking the afternoon half.",
                subproblem="How many muffins remain after the morning?",
                answer="12",
            ),
            Step(
                meta="The afternoon sells half of that remaining stock, which can now be computed.",
                subproblem="How many muffins are sold in the afternoon?",
                answer="6",
            ),
            Step(
                meta="The question asks what is left, not what sold, so the afternoon sales are taken off the remaining stock.",
                subproblem="How many muffins are left at closing?",
                answer="6",
            ),
        ],
        final_answer="6",
    ),
)

_CODE = FewShot(
    domain="code",
    problem=(
        "Is `return s.lower() == s[::-1]` a correct Python check that a string s is a "
        "palindrome, ignoring case? If not, fix it."
    ),
    reasoning=(
        "First, what does s[::-1] do? It reverses the string. Next, I compare the two sides: "
        "the left side is lowercased, but the reversed side keeps its original case. Wait, "
        'let me try "Aba": the left is "aba" and the right is "abA", so it returns False '
        'even though "Aba" is a palindrome ignoring case. So it is not correct; lowercase '
        "before reversing: t = s.lower(); return t == t[::-1]."
    ),
    structure=Structure(
        steps=[
            Step(
                meta="The check relies on a slice, so its meaning must be clear before the comparison can be judged.",
                subproblem="What does s[::-1] produce?",
                answer="the string reversed",
            ),
            Step(
                meta="Knowing the slice, the two sides of the comparison can be checked for how they treat case.",
                subproblem="Are both sides of the comparison lowercased?",
                answer="No, only the left side",
            ),
            Step(
                meta="A concrete mixed-case palindrome will show whether that mismatch breaks the check.",
                subproblem='What does the code return for "Aba"?',
                answer="False",
            ),
            Step(
                meta="Since the check fails on a mixed-case palindrome, a corrected version is needed.",
                subproblem="How should the code be fixed?",
                answer="t = s.lower(); return t == t[::-1]",
            ),
        ],
        final_answer="Not correct; use t = s.lower(); return t == t[::-1]",
    ),
)

_SCIENCE = FewShot(
    domain="science",
    problem=(
        "A 2 kg ball is dropped from a height of 20 m. Ignoring air resistance and taking "
        "g = 10 m/s^2, how fast is it moving just before it hits the ground?"
    ),
    reasoning=(
        "First, the potential energy at the top: mgh = 2 x 10 x 20 = 400 J. With no air "
        "resistance all of it becomes kinetic energy, so the kinetic energy at the bottom is "
        "also 400 J. Next, from (1/2)mv^2 = 400 with m = 2, v^2 = 400, so v = 20 m/s. Wait, "
        "let me check with v = sqrt(2gh) = sqrt(400) = 20, which agrees. So the ball hits "
        "the ground at 20 m/s."
    ),
    structure=Structure(
        steps=[
            Step(
                meta="Energy conservation is the natural route, and it starts from the energy the ball has at the top.",
                subproblem="What is the ball's potential energy at 20 m?",
                answer="400 J",
            ),
            Step(
                meta="With no air resistance the energy at the top is converted, so the kinetic energy at the bottom follows.",
                subproblem="What is the ball's kinetic energy just before impact?",
                answer="400 J",
            ),
            Step(
                meta="The speed can be recovered from the kinetic energy and the mass.",
                subproblem="What speed gives a 2 kg ball 400 J of kinetic energy?",
                answer="20 m/s",
            ),
            Step(
                meta="An independent formula guards against an arithmetic slip.",
                subproblem="Does v = sqrt(2gh) give the same speed?",
                answer="Yes, 20 m/s",
            ),
        ],
        final_answer="20 m/s",
    ),
)

_PUZZLE = FewShot(
    domain="puzzle",
    problem=(
        "Ana, Ben and Cal each own one pet: a cat, a dog or a fish. Ana is allergic to fur, "
        "and Ben is afraid of dogs. Who owns the dog?"
    ),
    reasoning=(
        "First, Ana is allergic to fur, and both the cat and the dog have fur, so Ana must "
        "have the fish. Next, Ben is afraid of dogs, so he does not own the dog; the fish is "
        "already taken, so Ben has the cat. Wait, that leaves only the dog, and Cal is the "
        "only one left, so Cal owns the dog."
    ),
    structure=Structure(
        steps=[
            Step(
                meta="Ana's allergy rules out two pets at once, so her clue is the most restrictive place to start.",
                subproblem="Which pet does Ana own?",
                answer="the fish",
            ),
            Step(
                meta="With Ana's pet assigned, Ben's fear narrows his remaining options to one.",
                subproblem="Which pet does Ben own?",
                answer="the cat",
            ),
            Step(
                meta="Only one pet and one person are left, so the last assignment is forced.",
                subproblem="Who owns the dog?",
                answer="Cal",
            ),
        ],
        final_answer="Cal",
    ),
)

FEW_SHOTS: dict[str, FewShot] = {
    shot.domain: shot for shot in (_MATH, _CODE, _SCIENCE, _PUZZLE)
}
"""The examples by domain; ``gsrm.prompts.DEFAULT_SHOTS`` picks which ones the base model sees."""
