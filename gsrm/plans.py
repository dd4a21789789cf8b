r"""A step's sub-question turned into the object of a plan ("Find how many eggs Janet sells.").

Why in ``gsrm``: the describers' training data derives every plan (meta-reasoning) from its
human question this way (``training.descdata.describe_meta``, with a verb drawn at random), so
the plans they write restate their question (README, "What the plan line carries"). A
describer that writes only the question and the answer needs the same derivation at
inference, with one fixed verb (``plan_for``); training and inference share this module so
the two cannot drift. Pure text functions, no model.

Example::

    >>> plan_for("How many eggs does Janet sell?")
    'Find how many eggs Janet sells.'
    >>> plan_for("Simplify the fraction.")
    'Simplify the fraction.'
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

PLAN_VERBS = ("Find", "Work out", "Figure out")
"""The verbs the describers' data opens a plan with, one drawn at random per row
(``training.descdata.describe_meta``; the order is part of a seed's data)."""
PLAN_VERB = PLAN_VERBS[0]
"""The verb ``plan_for`` opens a plan with."""
PLAN_RULE_VERSION = 2
"""Bumped when ``plan_for`` turns some question differently (2: determiner-and-noun subjects
before any verb, "-ies" / "-ied" verbs). A describer whose format derives its plans has this
in its decomposer identity (``gsrm.model.GSRM.decomposer_identity``), so a cached
decomposition never keeps a plan the current rule would not write."""


def lower_first(text: str) -> str:
    """``text`` with its first letter lower-cased, unless its first word is an acronym or "I".

    >>> lower_first("How many"), lower_first("I think"), lower_first("USA today")
    ('how many', 'I think', 'USA today')
    """
    w = text.split(" ", 1)[0]
    if text[:1].isupper() and not w[1:2].isupper() and w not in ("I", "I'll", "I'm"):
        return text[:1].lower() + text[1:]
    return text


_IRREGULAR = {"have": "has", "do": "does", "go": "goes", "be": "is", "buy": "buys",
              "pay": "pays", "say": "says", "make": "makes", "get": "gets", "spend": "spends"}
PAST = {"have": "had", "do": "did", "go": "went", "buy": "bought", "pay": "paid",
        "make": "made", "get": "got", "spend": "spent", "sell": "sold", "take": "took",
        "give": "gave", "earn": "earned", "need": "needed", "run": "ran", "eat": "ate",
        "find": "found", "win": "won", "read": "read", "drive": "drove", "see": "saw",
        "bring": "brought", "keep": "kept", "lose": "lost", "put": "put", "spend ": "spent"}
_ASKED = re.compile(r"^((?:How (?:many|much)|What)\b(?:\s\w+){0,4}?)\s(does|do|did)\s"
                    r"(she|he|it|they|we|I|you|[A-Z][a-z]+)\s([a-z]+)\b(.*)$")


def uninvert(aux: str, verb: str, past: Mapping[str, str] = PAST) -> str:
    """The verb as it reads once the auxiliary leaves the front of the question: "did" ->
    past tense, "does" -> third person, "do" -> as it is, a modal stays in front of it.

    >>> [uninvert("did", "pay"), uninvert("does", "wash"), uninvert("will", "be")]
    ['paid', 'washes', 'will be']
    >>> [uninvert("does", "carry"), uninvert("did", "carry"), uninvert("does", "play")]
    ['carries', 'carried', 'plays']
    """
    consonant_y = len(verb) > 2 and verb.endswith("y") and verb[-2] not in "aeiou"
    if aux == "did":
        if verb in past:
            return past[verb]
        return verb[:-1] + "ied" if consonant_y else verb + ("d" if verb.endswith("e") else "ed")
    if aux == "does":
        if verb in _IRREGULAR:
            return _IRREGULAR[verb]
        if consonant_y:
            return verb[:-1] + "ies"
        return verb + ("es" if verb.endswith(("s", "sh", "ch", "x")) else "s")
    return verb if aux == "do" else f"{aux} {verb}"


def question_body(q: str) -> str | None:
    """A sub-question as the object of "find ...", or None when it cannot be turned safely.

    Only the common "How many ... does <name> <verb> ...?" shape is inverted (with a table of
    irregular verbs); other wh-questions without an auxiliary are kept as they are.

    >>> question_body("How many eggs does Janet sell?")
    'how many eggs Janet sells'
    >>> question_body("How much did she pay for the shoes?")
    'how much she paid for the shoes'
    >>> question_body("How many eggs are left?")
    'how many eggs are left'
    >>> question_body("Why is the sky blue?") is None
    True
    """
    q = " ".join(q.strip().rstrip("?").split())
    m = _ASKED.match(q)
    if m:
        head, aux, subj, verb, rest = m.groups()
        return lower_first(f"{head} {subj} {uninvert(aux, verb)}{rest}")
    if re.match(r"^(How (many|much)|What)\b", q) and not re.search(
            r"\b(does|do|did|will|would|can|could|should)\b", q):
        return lower_first(q)
    return None


_WH = r"(How \w+(?:\s[\w'-]+){0,4}?|What(?:\s[\w'-]+){0,3}?)"
_INVERTED = re.compile(rf"^{_WH}\s(does|do|did|will|would|can|could|should)\s(.+)$")
_BE = re.compile(rf"^{_WH}\s(is|are|was|were)\s(she|he|it|they|we|I|you|[A-Z][a-z]+"
                 r"(?:'s [a-z]+)?|(?:the|his|her|their|its) [a-z]+)$")
_PRONOUN = frozenset({"she", "he", "it", "they", "we", "I", "you"})
_DETERMINER = re.compile(r"^(?:the|his|her|their|its|my|our|your|each|every|this|that|these|"
                         r"those|[A-Z][a-z]+'s)$")
#: closed-class words that cannot be the verb after a two-word subject ("the baker in ...")
_NOT_VERB = frozenset({"in", "on", "of", "at", "for", "with", "by", "from", "to", "into", "and",
                       "or", "the", "a", "an", "that", "who", "which", "whose", "per", "each",
                       "as", "than", "all", "both", "not", "also", "only", "still", "now",
                       "then", "there", "here", "have", "has", "had", "been", "be"})
#: verbs a noun-phrase subject may end before (a longer subject is not split on a guess)
_VERBS = frozenset({"cost", "weigh", "take", "last", "travel", "spend", "need", "produce",
                    "have", "make", "eat", "carry", "cover", "drive", "earn", "pay", "sell",
                    "buy", "get", "use", "hold", "contain", "save", "grow", "lose", "win",
                    "collect", "receive", "run", "walk", "read", "charge", "owe", "give", "be"})
PAST_MORE = {"cost": "cost", "hold": "held", "grow": "grew", "travel": "travelled",
             "owe": "owed", "use": "used", "save": "saved", "receive": "received"}


def _subject_length(words: Sequence[str]) -> int | None:
    """How many words the subject after an inverted auxiliary has, or None when unsure: a
    pronoun or a name is one word; "the/his/Ann's ..." runs to the first known verb, else it
    is the determiner and one noun when the word after them is a plain lower-case word that is
    not a closed-class one ("the farmer fill", not "the baker in the shop bake").

    >>> _subject_length("the farmer fill".split()), _subject_length("the baker in it".split())
    (2, None)
    >>> _subject_length("the potting soil cost him".split())
    3
    """
    if not words:
        return None
    if words[0] in _PRONOUN or (words[0][:1].isupper() and words[0].isalpha()):
        return 1 if len(words) > 1 else None
    if _DETERMINER.match(words[0]):
        known = next((k for k in range(2, min(5, len(words))) if words[k] in _VERBS), None)
        if known is not None:
            return known
        if len(words) > 2 and words[1].isalpha() and words[1].islower() \
                and re.fullmatch(r"[a-z]+", words[2]) and words[2] not in _NOT_VERB:
            return 2
    return None


def meta_body(question: str) -> str | None:
    """More question shapes as the object of "find ..." (``question_body`` takes only
    pronoun or name subjects after do/does/did): modal and "be" questions (the auxiliary
    moves after the subject; no verb changes) and "the/his/her X" subjects.

    >>> meta_body("How old is Mark?")
    'how old Mark is'
    >>> meta_body("How far did the bus travel?")
    'how far the bus travelled'
    >>> meta_body("How much does the paper cost?")
    'how much the paper costs'
    """
    q = " ".join(question.strip().rstrip("?").split())
    m = _BE.match(q)
    if m:
        head, aux, subj = m.groups()
        return lower_first(f"{head} {subj} {aux}")
    m = _INVERTED.match(q)
    if m is None:
        return None
    head, aux, tail = m.groups()
    words = tail.split(" ")
    k = _subject_length(words)
    if k is None:
        return None
    subj, verb, rest = " ".join(words[:k]), words[k], " ".join(words[k + 1:])
    rest = f" {rest}" if rest else ""
    return lower_first(f"{head} {subj} {uninvert(aux, verb, {**PAST, **PAST_MORE})}{rest}")


def plan_body(question: str) -> str | None:
    """The question as the object of "find ...", or None when no rule turns it safely
    (``question_body``, then ``meta_body``'s further shapes)."""
    return question_body(question) or meta_body(question)


def plan_for(question: str, verb: str = PLAN_VERB) -> str:
    """A plan naming the step's sub-problem: ``verb`` + the question as its object, or the
    question itself (with a final stop) where it cannot be turned, as the data's plans are
    (``training.descdata.describe_meta`` draws the verb at random; this one is fixed, so the
    same question always gets the same plan).

    >>> plan_for("How old is Mark?")
    'Find how old Mark is.'
    >>> plan_for("Why is the sky blue?")
    'Why is the sky blue?'
    >>> plan_for("Find the minimum value of $x$")
    'Find the minimum value of $x$.'
    """
    body = plan_body(question)
    if body is None:
        q = question.strip()
        return q if q.endswith(("?", ".", "!")) else f"{q}."
    return f"{verb} {body}."


__all__ = ["PAST", "PAST_MORE", "PLAN_RULE_VERSION", "PLAN_VERB", "PLAN_VERBS", "lower_first",
           "meta_body", "plan_body", "plan_for", "question_body", "uninvert"]
