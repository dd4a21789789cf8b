"""Trace units: sentences and clause-level pieces of a reasoning trace, with character offsets.

Why a module of its own: the segmenter decides *per unit* whether a new step begins, so a step
boundary can only fall where a unit starts; the evaluation projects decompositions onto the
same units, and the sentence baseline is "one step per sentence unit". Everything that cuts a
trace into pieces lives here, is pure (stdlib only) and keeps offsets, so that
``reasoning[unit.start:unit.end]`` is always the unit's text.

**Where units start** (``units``):

- after a sentence end (``.``, ``!``, ``?``, optionally followed by closing quotes or
  brackets) and white space, when the next character is not a lower-case letter;
- at every line start (a line break always ends a unit);
- after a semicolon and white space (``( ; stack: ( (``: clause-level steps);
- at a run-on join (``run_on_cuts``): a capitalised word right after a word with no capitals,
  where a full stop or a line break went missing ("... 16 bars in each box Martha has ..."),
  or right after a math span ("... $x = 2$ So we ...").

**Where they never start:** inside protected regions — fenced code blocks (```` ``` ````),
display math (``$$ ... $$``, ``\\[ ... \\]``), inline math (``\\( ... \\)`` and ``$...$`` with
LaTeX inside) — and after abbreviations ("e.g.", "Dr.", "vs."), initials ("J. Smith"),
decimals ("3.14", no space), or a list number at a line start ("1. First ...").

Example::

    >>> [u.text for u in units("First, add 2 and 3. So we get 5.\\nWait, e.g. 5 = 2 + 3; yes")]
    ['First, add 2 and 3.', 'So we get 5.', 'Wait, e.g. 5 = 2 + 3;', 'yes']
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Unit:
    """One unit of a trace: its character span ``text[start:end]`` and that text."""

    start: int
    end: int
    text: str


# --------------------------------------------------------------------------- protected regions
_PROTECT = re.compile(
    r"```.*?(?:```|\Z)"            # fenced code (an unclosed fence runs to the end)
    r"|\$\$.*?(?:\$\$|\Z)"         # display math $$ ... $$
    r"|\\\[.*?(?:\\\]|\Z)"         # display math \[ ... \]
    r"|\\\(.*?(?:\\\)|\Z)"         # inline math \( ... \)
    r"|(?<![\\$])\$(?!\s)[^$\n]{1,400}?(?<!\s)\$(?!\d)",  # inline $...$ (checked below)
    re.DOTALL,
)
_LATEXISH = re.compile(r"[\\^_{}=<>]|[a-zA-Z]\s*[+\-*/]|^[a-zA-Z]$")


def protected_spans(text: str) -> list[tuple[int, int]]:
    r"""Character ranges no unit boundary may fall inside (code, display and inline math).

    A ``$...$`` pair counts as math only when its content looks like LaTeX (a backslash,
    ``^``, ``_``, braces, a comparison, or a letter in an expression), so dollar amounts
    ("$5 and $6") stay prose.

    >>> protected_spans("Costs $5 and $6. Let $x^2 = 4$. Then")
    [(21, 30)]
    """
    spans: list[tuple[int, int]] = []
    for m in _PROTECT.finditer(text):
        s = m.group()
        if s.startswith("$") and not s.startswith("$$") and not _LATEXISH.search(s[1:-1]):
            continue
        spans.append((m.start(), m.end()))
    return spans


def _inside(pos: int, spans: Sequence[tuple[int, int]]) -> bool:
    return any(a < pos < b for a, b in spans)


# --------------------------------------------------------------------------- cut points
_ABBREV = frozenset(
    ["e.g", "i.e", "vs", "cf", "al", "approx", "dr", "mr", "mrs", "ms", "prof", "st", "no", "fig", "eq", "eqs", "resp", "ca", "ex", "sec", "ch", "vol", "pp", "jan", "feb", "mar", "apr", "jun", "jul", "aug", "sep", "sept", "oct", "nov", "dec", "mt", "ft", "jr", "sr", "inc", "ltd", "co"]
)
_SENT_END = re.compile(r"[.!?]+[\"')\]$]*(?=\s)")
_LIST_NUMBER = re.compile(r"(?:^|\n)[ \t]*(?:\d{1,3}|[a-zA-Z]|[ivxIVX]{1,4})[.)]$")
_RUN_ON = re.compile(r"(?<=[a-z0-9%)\]])\s+(?=[A-Z][a-z])")
#: words after which a capitalised word is a name in the same clause ("to Mary", "in April")
_JOINERS = frozenset("in on to at of from with by and or for than as about into "
                     "named called like the a an".split())
_CAPITAL_WORD = re.compile(r"[ \t]+(?=[A-Z][a-z])")


def run_on_cuts(sentence: str) -> list[int]:
    """Offsets in ``sentence`` where a capitalised word follows a word with no capitals.

    Such a run-on join is where a full stop or a line break went missing ("... = 16 bars in
    each box Martha has ..."): GSM8K solutions without their line breaks are full of them.
    A word with capitals before the join ("Doctor Jones") does not cut, nor a preposition,
    article or conjunction ("to Mary", "in April and May": a name in the same clause).

    >>> run_on_cuts("It takes 2/2=1 bolt So the total is 3 bolts to Mary Doctor Jones")
    [20]
    >>> run_on_cuts("16 bars in each box Martha has 56 bars. She sold 24 in May.")
    [20]
    """
    cuts: list[int] = []
    for m in _RUN_ON.finditer(sentence):
        before = sentence[: m.start()].split()
        if before and not any(c.isupper() for c in before[-1]) and before[-1] not in _JOINERS:
            cuts.append(m.end())
    return cuts


def _is_abbreviation(text: str, dot: int) -> bool:
    """The full stop at ``dot`` ends an abbreviation or an initial, not a sentence."""
    k = dot
    while k > 0 and not text[k - 1].isspace():
        k -= 1
    word = text[k:dot].lstrip("(\"'[").lower()
    if word in _ABBREV:
        return True
    return len(word) == 1 and word.isalpha() and text[k:dot].lstrip("(\"'[").isupper()


def _cut_points(text: str) -> list[int]:
    """Offsets where a new unit starts (the first non-space character after a cut)."""
    prot = protected_spans(text)
    cuts: set[int] = set()

    def next_char(pos: int) -> int:
        while pos < len(text) and text[pos].isspace():
            pos += 1
        return pos

    # line breaks
    for m in re.finditer(r"\n", text):
        p = next_char(m.end())
        if p < len(text) and not _inside(m.start(), prot):
            cuts.add(p)
    # sentence ends
    for m in _SENT_END.finditer(text):
        end = m.end()
        p = next_char(end)
        if p >= len(text) or _inside(end, prot):
            continue
        nxt = text[p]
        if nxt.islower():
            continue
        dot = m.start()
        single_dot = m.group().rstrip("\"')]$") == "."
        if single_dot and (_is_abbreviation(text, dot) or _LIST_NUMBER.search(text[:dot + 1])):
            continue
        cuts.add(p)
    # semicolons
    for m in re.finditer(r";\s+", text):
        p = m.end()
        if p < len(text) and not _inside(m.start(), prot):
            cuts.add(p)
    # run-on joins, also right after a math span ("... $x = 2$ So we ...")
    for c in run_on_cuts(text):
        if not _inside(c, prot):
            cuts.add(c)
    for _, b in prot:
        m = _CAPITAL_WORD.match(text, b)
        if m and m.end() > b:
            cuts.add(m.end())
    first = next_char(0)
    cuts.discard(first)
    return sorted(c for c in cuts if c < len(text))


def units(text: str) -> list[Unit]:
    """The trace's units in order; together they cover every non-space character.

    Each unit runs from its start to the next unit's start, trailing white space removed.

    >>> [(u.start, u.end) for u in units("Add 2. Then 3.\\n\\nDone")]
    [(0, 6), (7, 14), (16, 20)]
    >>> units("   ")
    []
    """
    first = len(text) - len(text.lstrip())
    if first >= len(text):
        return []
    starts = [first, *_cut_points(text)]
    out: list[Unit] = []
    for k, s in enumerate(starts):
        e = starts[k + 1] if k + 1 < len(starts) else len(text)
        while e > s and text[e - 1].isspace():
            e -= 1
        if e > s:
            out.append(Unit(s, e, text[s:e]))
    return out


def spans_from_starts(text: str, starts: Sequence[int]) -> list[tuple[int, int]]:
    """Step spans for step start offsets: each runs to the next start, trailing space removed.

    The first span always begins at the first non-space character, so the spans cover every
    non-space character of ``text`` whatever ``starts`` holds (empty: one span).

    >>> spans_from_starts("Add 2. Then 3. Done", [7])
    [(0, 6), (7, 19)]
    """
    first = len(text) - len(text.lstrip())
    if first >= len(text):
        return []
    cuts = sorted({s for s in starts if first < s < len(text)})
    bounds = [first, *cuts, len(text)]
    spans: list[tuple[int, int]] = []
    for a, b in itertools.pairwise(bounds):
        while b > a and text[b - 1].isspace():
            b -= 1
        while a < b and text[a].isspace():
            a += 1
        if b > a:
            spans.append((a, b))
    return spans


# --------------------------------------------------------------------------- sentences
_SENT = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9$(\"'])|\n+")


def split_sentences(text: str) -> list[str]:
    """Sentences by end punctuation or line break (the ``sentences`` baseline's splitter).

    Coarser than ``units``: no cut at semicolons or run-on joins, no protected regions.

    >>> split_sentences("First add 2 and 3. So the sum is 5.")
    ['First add 2 and 3.', 'So the sum is 5.']
    """
    return [s.strip() for s in _SENT.split(text) if s and s.strip()]


# --------------------------------------------------------------------------- cues
#: cues that open a planning / checking / choosing sentence: a new step, role meta
META_CUES: tuple[str, ...] = (
    "first", "firstly", "to begin", "to start", "let's", "let us", "let me", "we need",
    "i need", "we want", "we should", "we must", "we have to", "i will", "i'll", "next",
    "now", "wait", "alternatively", "hmm", "actually", "but", "however", "hold on", "instead",
    "check", "to check", "to verify", "verify", "recall", "note that", "notice", "the question",
    "our goal", "the goal", "to find", "to solve", "in order to", "step",
)
#: cues that open a new step whose sentence is solving (a result or conclusion)
SOLVE_CUES: tuple[str, ...] = (
    "so", "thus", "therefore", "hence", "then", "finally", "lastly", "second", "secondly",
    "third", "thirdly", "after that", "in total", "that means", "this means", "similarly",
    "also", "overall",
)


def _cue_pattern(cues: Sequence[str]) -> re.Pattern[str]:
    alts = "|".join(re.escape(c) for c in sorted(cues, key=len, reverse=True))
    # after optional markup/quotes; the cue must end at a word boundary ("So," "Next:" "Now")
    return re.compile(rf"^[\s\"'*_#>(-]*(?:{alts})(?![\w'])", re.IGNORECASE)


_META_RE = _cue_pattern(META_CUES)
_SOLVE_RE = _cue_pattern(SOLVE_CUES)
PLANNING_PLACEHOLDER = "(planning step)"


def cue_role(sentence: str) -> str | None:
    """``meta`` / ``solve`` if the sentence opens with a cue, else None (continues a step).

    >>> cue_role("Wait, that is wrong."), cue_role("So x = 2."), cue_role("Solve for x.")
    ('meta', 'solve', None)
    """
    if _META_RE.match(sentence):
        return "meta"
    if _SOLVE_RE.match(sentence):
        return "solve"
    return None


COPY_MIN_WORDS = 6
"""An answer of at least this many words found word for word in its span is a copy: a brief
result ("72 eggs", "$25", "x = 3") is shorter, and a shorter stretch of the span can be the
result itself."""


def copies_span(answer: str, span: str, min_words: int = COPY_MIN_WORDS) -> bool:
    """Whether ``answer`` copies a stretch of ``span`` (``min_words`` words or more, white
    space and a final full stop aside) instead of stating its result briefly.

    Why one predicate: issue 16 asks for a step's result stated briefly, never a copied
    sentence of the trace; the describer's dev check (``benchmarks/describer_dev.py``) counts
    such answers and SFT can leave them out of the loss (``training.sft``), the same way.

    >>> copies_span("10, and it divides evenly, so there are 10 cartons",
    ...             "60 / 6 = 10, and it divides evenly, so there are 10 cartons.")
    True
    >>> copies_span("10 cartons", "so there are 10 cartons.")
    False
    """
    words = answer.split()
    if len(words) < min_words:
        return False
    return " ".join(words).rstrip(".") in " ".join(span.split())
