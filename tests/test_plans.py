"""gsrm.plans: a sub-question turned into a plan, the derivation the describers' data uses."""

from __future__ import annotations

import random

import pytest


@pytest.mark.parametrize(("question", "plan"), [
    ("How many eggs does Janet sell?", "Find how many eggs Janet sells."),  # does -> 3rd person
    ("How much did she pay for the shoes?", "Find how much she paid for the shoes."),  # did -> past
    ("How many eggs are left?", "Find how many eggs are left."),  # no auxiliary: as it is
    ("How old is Mark?", "Find how old Mark is."),  # "be" moves after the subject
    ("How far did the bus travel?", "Find how far the bus travelled."),  # a noun-phrase subject
    ("How much will Billy be paid in total?", "Find how much Billy will be paid in total."),
    # a determiner and one noun before a verb the table does not know; -ies after a consonant
    ("How many cartons does the farmer fill?", "Find how many cartons the farmer fills."),
    ("How many bags does each worker carry?", "Find how many bags each worker carries."),
    ("How many pies did the baker bake?", "Find how many pies the baker baked."),
    # unsure where the subject ends: the question itself
    ("How many cookies does the baker in the shop bake?",
     "How many cookies does the baker in the shop bake?"),
    ('How many times does the word "trash" appear?',
     'How many times does the word "trash" appear?'),
    ("Why is the sky blue?", "Why is the sky blue?"),  # not turned: the question itself
    ("Find the minimum value of $x$", "Find the minimum value of $x$."),  # an imperative
    ("  Simplify  ", "Simplify."),
])
def test_plan_for(question: str, plan: str) -> None:
    from gsrm.plans import plan_for

    assert plan_for(question) == plan


@pytest.mark.parametrize("question", [
    "How many eggs does Janet sell?", "How old is Mark?", "Why is the sky blue?",
    "Find the minimum value of $x$",
])
def test_the_training_data_derives_plans_the_same_way(question: str) -> None:
    """``training.descdata.describe_meta`` is ``plan_for`` with a verb drawn at random, and
    draws none for a question it keeps as it is (so a seed's data is what it always was)."""
    from gsrm.plans import plan_body, plan_for
    from training.descdata import describe_meta

    rng, ref = random.Random(3), random.Random(3)
    got = describe_meta(1, 3, question, rng)
    if plan_body(question) is None:
        assert got == plan_for(question) and rng.random() == ref.random()  # no draw
    else:
        verb = ref.choice(("Find", "Work out", "Figure out"))  # the data's, in this order
        assert got == plan_for(question, verb)
