"""Parse generated decompositions into a ``Structure``, tolerantly and never raising.

Why tolerant: the parser reads the output of small models (and of other people's models, via
the ``openai`` backend), which drift from the canonical format: the released RLKD code even
prompted for ``[Meat-reasoning i]`` while parsing ``[sub-think i]``/``[Query i]``. A reward
that silently collapses to 0 because a colon is missing trains on noise, so every spelling
seen in the wild is accepted, and everything the parser skips or repairs is reported in
``Structure.warnings`` for the caller to inspect or count.

Accepted tags (case-insensitive, any number of spaces, ``-``/``_`` between words):
``[Meta-reasoning i]``, ``[Meat-reasoning i]``, ``[sub-think i]`` -> meta;
``[Sub-problem i]``, ``[Subproblem i]``, ``[Query i]`` -> subproblem; ``[Answer i]`` -> answer.
The number may be missing or wrong; a tag may be wrapped in markdown bold and followed by
``:``, ``-`` or nothing. Without brackets a tag is only recognised at the start of a line and
with its number (``Answer 2: ...``), so ordinary prose like "Answer: 5" is not a step.
A bracketed tag in the middle of a line needs a ``:``/``-`` after it, so a reference such as
"using [Answer 1], we ..." inside a step stays text instead of splitting the step.
A tag that lost one bracket (``[Answer 2: ...``, ``Answer 2]: ...``) is read, with a warning.

A new step starts when a tag's part comes at or before a part already filled in the current
step (meta < subproblem < answer), or when the tag's number differs from the current step's.

The final answer is the last final-answer line after the last tag ("So the final answer is:",
"Final answer -", "#### X", or a bare "Answer: X" line), else the last ``\\boxed{}`` there;
the last step's answer ends where the first such line begins.

Why no clever regexes: model output can be hundreds of KB of repeated whitespace or markup,
so every pattern here is written to match in linear time (no two adjacent quantifiers that
can share characters), and brace matching for ``\\boxed{}`` is done by a one-pass scan.

Example::

    >>> from gsrm.parse import parse_structure
    >>> s = parse_structure("[Meta-reasoning 1]: eggs first\\n[Sub-problem 1]: How many eggs?\\n"
    ...                     "[Answer 1]: 9\\nSo the final answer is: 18")
    >>> (s.n_steps, s.steps[0].answer, s.final_answer, s.warnings)
    (1, '9', '18', [])
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from gsrm.structure import Kind, Step, Structure

_RANK: dict[Kind, int] = {"meta": 0, "subproblem": 1, "answer": 2}
_LABEL: dict[Kind, str] = {
    "meta": "meta-reasoning",
    "subproblem": "sub-problem",
    "answer": "answer",
}

# Tag spellings with separators removed -> (kind, how a warning names a non-canonical one).
_SPELLINGS: dict[str, tuple[Kind, str | None]] = {
    "metareasoning": ("meta", None),
    "meatreasoning": ("meta", "meat-reasoning"),
    "subthink": ("meta", "sub-think"),
    "subproblem": ("subproblem", None),
    "query": ("subproblem", "query"),
    "answer": ("answer", None),
}
# Longer digit runs are not step numbers (and int() of over 4300 digits raises).
_MAX_STEP_NUMBER_DIGITS = 9

# Building blocks of the patterns below, written there as {name} and filled in by _expand.
_PIECES: dict[str, str] = {
    "name": r"(?P<name>me(?:ta|at)[\s_-]*reasoning|sub[\s_-]*think|sub[\s_-]*problem|query|answer)",
    "bold": r"(?:\*\*|__)",
    # a dash directly before a digit is a minus sign, not a separator
    "sep": r"(?P<sep>[:：]|[-–—](?!\d))",
    # emphasis closing a bold/italic tag ("**[Answer 1]**:"); eaten only when a separator or
    # the line end follows, so content such as "__init__" after the tag keeps its underscores
    "close_emph": r"(?:[ \t]*(?:\*{1,3}|_{1,3})(?=[ \t]*(?:[:：]|[-–—](?!\d)|\n|\Z)))?",
    "conn": r"(?:so|thus|therefore|hence)[ \t,]+",
}


def _expand(template: str) -> str:
    """Fill the ``{name}`` building blocks into a pattern; regex braces like ``{1,3}`` stay."""
    for key, value in _PIECES.items():
        template = template.replace("{" + key + "}", value)
    return template


# "[Meta-reasoning 1]:", "[**Answer 2**] -", "[Query]"; or, missing its "]", "[Answer 2: ..."
_BRACKETED = re.compile(
    _expand(
        r"\[\s*(?:\*\*\s*)?{name}\s*(?:(?P<num>\d+)\s*)?(?:\*\*\s*)?"
        r"(?:(?P<close>\]){close_emph}[ \t]*(?:{sep}[ \t]*)?"
        r"|(?(num)(?P<sep2>[:：])[ \t]*|(?!)))"
    ),
    re.IGNORECASE,
)
# "Answer 2: ...", "- **Sub-problem 2:** ...", "### Meta-reasoning 3" alone on its line
_LINE_START = re.compile(
    _expand(
        r"(?m)^[ \t]*(?:[#>*+_-]+[ \t]*)?(?:\d{1,3}[.)][ \t]*)?{bold}?{name}[ \t]*(?P<num>\d+)"
        r"(?P<close>\])?(?:\*{1,3}|_{1,3})?(?:[ \t]*{sep}[ \t]*|[ \t]*$)"
    ),
    re.IGNORECASE,
)
# "So the final answer is: X", "Final answer - X", "... so the final answer is X" (mid-line,
# for tags inline in one line), "#### X", and a bare "Answer: X" / "The answer is X" line.
_FINAL = re.compile(
    _expand(
        r"(?im)(?:(?:^|(?<=[.!?]))[ \t]*{bold}?(?:{conn})?|\b{conn})"
        r"(?:the[ \t]+)?final[ \t]+answer{bold}?"
        r"(?:[ \t]+is\b[ \t]*[:：=]?|[ \t]*(?:[:：=]|[-–—](?!\d))|[ \t]+(?=[-–—]\d))"
        r"{bold}?[ \t]*(?P<ans>[^\n]*)"
        r"|^[ \t]*####[ \t]*(?P<hash>[^\n]*)"
        r"|^[ \t]*{bold}?(?:{conn})?(?:the[ \t]+)?answer{bold}?"
        r"(?:[ \t]+is\b[ \t]*[:：]?|[ \t]*[:：]){bold}?[ \t]*(?P<bare>[^\n]*)"
    )
)
_BOXED_OPEN = "\\boxed{"
_MARKUP_PREFIX = frozenset(" \t#>*+_-\ufeff\u200b")  # what may precede a tag on "its own" line
_JUNK = " \t\n#>*+_-=~`:：\ufeff\u200b"  # a preamble/epilogue of only these is not worth a warning
_TRAILING_RULE = re.compile(r"\n[ \t]*(?:-{3,}|\*{3,}|_{3,})[ \t]*\Z")  # markdown "---" line


@dataclass(frozen=True)
class _Tag:
    """One recognised tag: its part, number, and span (including markup before and after it)."""

    kind: Kind
    num: int | None
    start: int
    core: int  # where the tag itself ("[" or its name) begins; start <= core
    end: int
    variant: str | None  # non-canonical spelling to report, e.g. "query"
    unbalanced: bool  # lost one of its brackets


def _kind_of(name: str) -> tuple[Kind, str | None]:
    """Map a matched tag name to its part; also return a non-canonical spelling to report."""
    key = re.sub(r"[\s_-]+", "", name.lower())
    return _SPELLINGS.get(key, ("answer", None))


def _step_number(digits: str | None) -> int | None:
    """The tag's number; absurdly long digit runs count as no number rather than raising."""
    if not digits or len(digits) > _MAX_STEP_NUMBER_DIGITS:
        return None
    return int(digits)


def _own_line_start(text: str, pos: int) -> int | None:
    """Start of the line if only markup (bullets, '#', '>', bold, "2.") precedes ``pos`` on it.

    Scans backwards over markup characters only, so the total work over all tags is linear.
    """
    i = pos
    while i > 0 and text[i - 1] in _MARKUP_PREFIX:
        i -= 1
    if i > 0 and text[i - 1] in ".)":  # numbered list item "2. [Meta-reasoning 2]"
        j = i - 1
        while j > 0 and i - 1 - j < 3 and text[j - 1].isdigit():
            j -= 1
        if j < i - 1:
            while j > 0 and text[j - 1] in " \t":
                j -= 1
            if j == 0 or text[j - 1] == "\n":
                return j
    if i == 0 or text[i - 1] == "\n":
        return i
    return None


def _find_tags(text: str) -> list[_Tag]:
    """All tags in order; where two candidate matches overlap, the earlier one wins."""
    found: list[_Tag] = []
    for m in _BRACKETED.finditer(text):
        line_start = _own_line_start(text, m.start())
        if line_start is None and not (m.group("sep") or m.group("sep2")):
            continue  # "... using [Answer 1], we ..." is a reference, not a tag
        kind, variant = _kind_of(m.group("name"))
        found.append(
            _Tag(
                kind,
                _step_number(m.group("num")),
                m.start() if line_start is None else line_start,
                m.start(),
                m.end(),
                variant,
                m.group("close") is None,
            )
        )
    for m in _LINE_START.finditer(text):
        kind, variant = _kind_of(m.group("name"))
        found.append(
            _Tag(
                kind,
                _step_number(m.group("num")),
                m.start(),
                m.start(),
                m.end(),
                variant,
                m.group("close") is not None,
            )
        )
    found.sort(key=lambda t: (t.core, -t.end))
    out: list[_Tag] = []
    for t in found:
        if out and t.core < out[-1].end:
            continue
        if out and t.start < out[-1].end:  # markup before this tag was already eaten by the last
            t = _Tag(t.kind, t.num, out[-1].end, t.core, t.end, t.variant, t.unbalanced)
        out.append(t)
    return out


def _step_of_tags(tags: list[_Tag]) -> list[int]:
    """For each tag, the index of the step it belongs to (the rule in the module docstring)."""
    out: list[int] = []
    filled_rank = -1
    cur_num: int | None = None
    step = -1
    for tag in tags:
        rank = _RANK[tag.kind]
        if (step < 0 or rank <= filled_rank
                or (tag.num is not None and cur_num is not None and tag.num != cur_num)):
            step += 1
            cur_num = tag.num
        elif cur_num is None:
            cur_num = tag.num
        out.append(step)
        filled_rank = rank
    return out


def _strip_emphasis(text: str) -> str:
    """Drop emphasis markers left at the edges by tag markup ("**[Answer 1]:** 9**" -> "9").

    Why: the markup around a tag is split between neighbouring parts, so a part can start or
    end with half of a bold pair. Dropped: a run of ``*``/``_`` at an edge next to whitespace
    (it cannot open or close emphasis there), an unpaired ``**``/``__`` at an edge, and a
    ``**`` pair wrapping the whole part. A balanced ``__`` is kept, so ``__init__`` survives.
    No regex: ``str`` strips are linear even on long runs of markers.
    """
    for _ in range(4):  # bounded: each pass removes at most a few markers
        before = text
        head = text.lstrip("*_")
        if head != text and (not head or head[0].isspace()):
            text = head.strip()
        tail = text.rstrip("*_")
        if tail != text and (not tail or tail[-1].isspace()):
            text = tail.strip()
        for mk in ("**", "__"):
            n = text.count(mk)
            if n % 2 == 1:
                if text.startswith(mk):
                    text = text[len(mk) :].strip()
                elif text.endswith(mk):
                    text = text[: -len(mk)].strip()
            elif (
                mk == "**"
                and n == 2
                and len(text) >= 4
                and text.startswith(mk)
                and text.endswith(mk)
            ):
                text = text[2:-2].strip()
        if text == before:
            break
    return text


def _clean(segment: str) -> str:
    """The text of one part: trimmed of separators, stray bold and trailing markdown rules."""
    text = segment.strip()
    text = _TRAILING_RULE.sub("", text).strip()
    return _strip_emphasis(text.lstrip(" \t\n:：")).strip()


def _last_boxed(text: str) -> str | None:
    """Content of the last balanced ``\\boxed{...}`` (nested braces allowed), in linear time."""
    closing: dict[int, int] = {}
    stack: list[int] = []
    for i, ch in enumerate(text):
        if ch == "{":
            stack.append(i)
        elif ch == "}" and stack:
            closing[stack.pop()] = i
    best: str | None = None
    pos = text.find(_BOXED_OPEN)
    while pos != -1:
        brace = pos + len(_BOXED_OPEN) - 1
        if brace in closing:
            best = text[brace + 1 : closing[brace]].strip()
        pos = text.find(_BOXED_OPEN, pos + 1)
    return best


def _clean_final(ans: str) -> str:
    """The value on a final-answer line: unboxed, without bold, ``$...$`` or a closing period.

    A lone ``$`` is kept: "$18" is money, "$18$" is LaTeX.
    """
    boxed = _last_boxed(ans) if _BOXED_OPEN in ans else None
    if boxed is not None:
        return boxed
    ans = _strip_emphasis(ans.strip()).replace("**", "").strip()
    ans = ans.rstrip(".").strip()
    if len(ans) >= 2 and ans.startswith("$") and ans.endswith("$"):
        ans = ans.strip("$").strip()
    return ans


@dataclass(frozen=True)
class _Final:
    """Final-answer lines found after the last tag (positions relative to the whole text)."""

    first_start: int | None  # where the first final-answer line begins (ends the last answer)
    first_end: int | None
    last_end: int | None
    answers: list[str]  # cleaned value of each line, in order
    boxed: str | None  # fallback when there is no such line


def _find_final(text: str, start: int) -> _Final:
    """Scan ``text[start:]`` for final-answer lines; a line may start right after a tag."""
    tail = text[start:]
    matches = list(_FINAL.finditer(tail))
    if not matches:
        return _Final(None, None, None, [], _last_boxed(tail) if _BOXED_OPEN in tail else None)
    answers = []
    for m in matches:
        raw = next(
            (g for g in (m.group("ans"), m.group("hash"), m.group("bare")) if g is not None), ""
        )
        answers.append(_clean_final(raw))
    return _Final(
        start + matches[0].start(),
        start + matches[0].end(),
        start + matches[-1].end(),
        answers,
        None,
    )


def _is_junk(text: str) -> bool:
    """True when ``text`` is only whitespace and markdown markup (nothing worth reporting)."""
    return not text.strip(_JUNK)


def parse_structure(text: str) -> Structure:
    """Parse a decomposition into steps; never raises on model output (see module docstring).

    Example::

        >>> s = parse_structure("**[Meat-reasoning 1]** start\\n[Query 1] Eggs?\\n[Answer 1] -3")
        >>> ([(x.meta, x.subproblem, x.answer) for x in s.steps], s.final_answer)
        ([('start', 'Eggs?', '-3')], None)
        >>> s.warnings  # doctest: +NORMALIZE_WHITESPACE
        ['read tag spelling [meat-reasoning] as [meta-reasoning]',
         'read tag spelling [query] as [sub-problem]', 'no final-answer line']
    """
    if not isinstance(text, str):
        return Structure(warnings=[f"expected text, got {type(text).__name__}"])
    raw = text
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    warnings: list[str] = []
    tags = _find_tags(text)
    if not tags:
        fin = _find_final(text, 0)
        warnings.append("no step tags found")
        final = fin.answers[-1] if fin.answers else fin.boxed
        return Structure(steps=[], final_answer=final or None, warnings=warnings, raw=raw)

    preamble = text[: tags[0].start]
    if not _is_junk(preamble):
        warnings.append(f"ignored {len(preamble.strip())} characters before the first tag")

    fin = _find_final(text, tags[-1].end)

    contents: list[str] = []
    for i, tag in enumerate(tags):
        stop = tags[i + 1].start if i + 1 < len(tags) else len(text)
        seg = text[tag.end : stop]
        if i + 1 == len(tags) and fin.first_start is not None:
            cut = text[tag.end : fin.first_start]
            # an answer that *is* the final-answer line keeps that line as its text
            seg = cut if _clean(cut) else text[tag.end : fin.first_end]
        contents.append(_clean(seg))

    for variant in sorted({t.variant for t in tags if t.variant}):
        kind, _ = _kind_of(variant)
        warnings.append(f"read tag spelling [{variant}] as [{_LABEL[kind]}]")
    unbalanced = sum(t.unbalanced for t in tags)
    if unbalanced:
        warnings.append(f"{unbalanced} tag(s) had a missing bracket")

    steps: list[dict[Kind, str]] = []
    step_nums: list[int | None] = []  # each step's number: the first its tags give
    unnumbered = 0
    for tag, content, k in zip(tags, contents, _step_of_tags(tags), strict=True):
        if tag.num is None:
            unnumbered += 1
        if k == len(steps):
            steps.append({})
            step_nums.append(tag.num)
        elif step_nums[k] is None:
            step_nums[k] = tag.num
        steps[k][tag.kind] = content

    if unnumbered:
        warnings.append(f"{unnumbered} tag(s) had no step number; steps numbered by position")
    for i, num in enumerate(step_nums, start=1):
        if num is not None and num != i:
            warnings.append(f"step {i} was numbered {num}; renumbered by position")

    out: list[Step] = []
    for i, parts in enumerate(steps, start=1):
        missing = [_LABEL[k] for k in ("meta", "subproblem", "answer") if not parts.get(k)]
        if missing:
            warnings.append(f"step {i}: missing {', '.join(missing)}")
        out.append(
            Step(
                meta=parts.get("meta", ""),
                subproblem=parts.get("subproblem", ""),
                answer=parts.get("answer", ""),
            )
        )

    final: str | None
    if fin.answers:
        given = [a for a in fin.answers if a]
        final = given[-1] if given else None
        if len(set(given)) > 1:
            warnings.append(f"{len(set(given))} different final answers; used the last")
        if not given:
            warnings.append("final-answer line is empty")
        epilogue = text[fin.last_end :] if fin.last_end is not None else ""
        if not _is_junk(epilogue):
            warnings.append(f"ignored {len(epilogue.strip())} characters after the final answer")
    else:
        final = fin.boxed
        if final is None:
            warnings.append("no final-answer line")
    return Structure(steps=out, final_answer=final or None, warnings=warnings, raw=raw)


def repeated_step_start(text: str) -> int | None:
    r"""Where the first step that repeats an earlier step word for word begins, or None.

    Why: a greedy decoder that falls into a loop writes the same step again and again until
    the token budget cuts one in half; an exact repeat of a whole step adds nothing to a
    decomposition, so every backend stops there (``gsrm.backends.safeguards``) and drops the
    repeat and what follows. Deliberately nothing looser (no paraphrases, no masked numbers,
    no "same question in a row"): a reflection that re-checks a step ("let me verify ...") is
    a different step, and a rule fitted to one data set's loops would cut honest steps of
    another.

    A step repeats when its meta-reasoning, sub-problem and answer all equal those of an
    earlier step (whitespace collapsed; the sub-problem and answer not empty). Steps are read
    with the same grammar as ``parse_structure``, over the complete lines of ``text`` only,
    and a step counts once the next step has begun there, so the answer is the same for
    every longer text that starts with ``text``: a decoder that stops as soon as it sees a
    repeat and a server that returns the whole completion cut it at the same place.

    >>> t = ("[Meta-reasoning 1]: a\n[Sub-problem 1]: How many?\n[Answer 1]: 5 laps.\n"
    ...      "[Meta-reasoning 2]: a\n[Sub-problem 2]: How many?\n[Answer 2]: 5  laps.\n[Meta")
    >>> repeated_step_start(t + "-reasoning 3]:\n") == t.index("[Meta-reasoning 2]")
    True
    >>> repeated_step_start(t) is None  # step 2 counts once step 3 has begun on a complete line
    True
    """
    head = text[: text.rfind("\n") + 1]
    tags = _find_tags(head)
    owner = _step_of_tags(tags)
    parts: list[dict[Kind, str]] = []
    starts: list[int] = []
    for i, (tag, k) in enumerate(zip(tags, owner, strict=True)):
        if k == len(parts):
            if parts and _repeats(parts):
                return starts[-1]
            parts.append({})
            starts.append(tag.start)
        end = tags[i + 1].start if i + 1 < len(tags) else len(head)
        parts[k][tag.kind] = " ".join(_clean(head[tag.end : end]).split())
    return None


def _repeats(parts: list[dict[Kind, str]]) -> bool:
    """The last step of ``parts`` equals an earlier one in all three parts."""
    last = parts[-1]
    if not last.get("subproblem") or not last.get("answer"):
        return False
    key = tuple(last.get(k, "") for k in _RANK)
    return any(tuple(p.get(k, "") for k in _RANK) == key for p in parts[:-1])


_WORDING = re.compile(r"^\[(?:Meta-reasoning|Sub-problem) \d+\]:([ \t]*.*)$", re.MULTILINE)
_ANSWER = re.compile(r"^\[Answer \d+\]:([ \t]*.*)$", re.MULTILINE)


def part_spans(text: str, answer: bool = False) -> list[tuple[int, int]]:
    r"""Character spans of the meta-reasoning and sub-problem texts (``answer=True``: of the
    answer texts) of a canonically written decomposition, every step (after the ``]:``,
    leading blank included; tags, the other parts and line breaks are not in them). Why: SFT
    masks the wording in rows whose wording is not human-written, and the answer in rows
    whose answer copies the trace (``training.sft``).

    >>> t = "[Meta-reasoning 1]: First.\n[Sub-problem 1]: Eggs?\n[Answer 1]: 9"
    >>> [t[a:b] for a, b in part_spans(t)], [t[a:b] for a, b in part_spans(t, answer=True)]
    ([' First.', ' Eggs?'], [' 9'])
    """
    pattern = _ANSWER if answer else _WORDING
    return [(m.start(1), m.end(1)) for m in pattern.finditer(text) if m.end(1) > m.start(1)]
