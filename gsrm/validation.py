"""One set of input rules for every entry point: the library, the ``gsrm`` CLI and the server.

Why one module: each entry point used to check input its own way, and they disagreed. The
server refused ``max_new_tokens <= 0`` while ``gsrm score --max-new-tokens -5`` scored a 0;
``"teacher": ""`` was a 422 while ``"teacher": "<think></think>"`` was scored; ``"steps": []``
was refused by the server and scored 0 by the CLI; a lone surrogate in a file surfaced as a
codec error far from the file that held it. Here each rule is written once, as a function that
raises ``ValueError`` (which pydantic turns into a validation error naming the field, the
CLI into exit 2 naming the file and field, the server into a 422) or as an ``Annotated`` type
shared by the CLI flags and the server settings.

The rules (DESIGN.md section 1):

- the reasoning of a text is what comes before ``</think>``, without ``<think>`` tags
  (``strip_think``);
- a teacher with no reasoning (blank, or only think tags, or text after ``</think>`` only) or
  no steps is bad input: there is nothing to distil;
- a student with no reasoning is scored, not refused: no steps, no model call, a reward of 0
  with a warning (``EMPTY_REASONING``; ``gsrm.model.GSRM.decompose_many`` applies it);
- text must be encodable as UTF-8 (no unpaired surrogates): every model and file on the way
  out would fail on it later, without saying where it came from.

Example::

    >>> from gsrm.validation import check_teacher, strip_think
    >>> strip_think("<think>add 2 and 3</think> The answer is 5.")
    'add 2 and 3'
    >>> check_teacher("<think></think> 5", "teacher")
    Traceback (most recent call last):
    ...
    ValueError: teacher is empty: no reasoning before </think> (think tags removed)
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from typing import Annotated, Any, Optional

from pydantic import Field, TypeAdapter, ValidationError

#: the warning a student with no reasoning is scored 0 with (no steps, no model call)
EMPTY_REASONING = "empty reasoning (nothing before </think>): no steps, scored 0"


def strip_think(text: str) -> str:
    """The reasoning part of a completion: the text before ``</think>``, without ``<think>``.

    Idempotent (every ``<think>`` is removed, not only the first), so applying it again to
    its own output, as the layers between a trainer and the model do, changes nothing.

    >>> strip_think("<think>add 2 and 3</think> The answer is 5.")
    'add 2 and 3'
    >>> strip_think("</think> only an answer"), strip_think("<think><think>x")
    ('', 'x')
    """
    head = text.split("</think>", 1)[0]
    return head.replace("<think>", "").strip()


def unpaired_surrogate(text: str) -> int | None:
    """The index of the first unpaired surrogate in ``text`` (not encodable as UTF-8), or None.

    >>> unpaired_surrogate("ok"), unpaired_surrogate("a\\ud800b")
    (None, 1)
    """
    if text.isascii():
        return None
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        return exc.start
    return None


def check_unicode(text: str, what: str) -> str:
    """``text`` unchanged, or ValueError naming ``what`` if it holds an unpaired surrogate."""
    at = unpaired_surrogate(text)
    if at is not None:
        raise ValueError(f"{what} is not valid Unicode (unpaired surrogate "
                         f"{text[at]!r} at character {at})")
    return text


def check_reasoning(text: str, what: str) -> str:
    """``text`` unchanged, or ValueError if it holds no reasoning (see ``strip_think``)."""
    check_unicode(text, what)
    if not strip_think(text):
        if not text.strip():
            raise ValueError(f"{what} is empty")
        raise ValueError(f"{what} is empty: no reasoning before </think> (think tags removed)")
    return text


def check_steps(steps: Sequence[Any], what: str) -> Sequence[Any]:
    """``steps`` unchanged, or ValueError if the list is empty."""
    if not steps:
        raise ValueError(f"{what} has no steps")
    return steps


def check_teacher(side: Any, what: str = "teacher") -> Any:
    """A teacher side (text or steps) unchanged, or ValueError: there must be something to distil.

    A ``gsrm.structure.Structure`` counts by its steps.
    """
    if isinstance(side, str):
        return check_reasoning(side, what)
    steps = getattr(side, "steps", side)
    check_steps(list(steps), what)
    return side


# --------------------------------------------------------------------------- generation limits
# Shared by the ``gsrm`` CLI flags (``arg_type``) and the ``gsrm-serve`` settings fields.
MaxNewTokens = Annotated[int, Field(gt=0, description="generation limit per decomposition "
                                    "(and the cap for chat max_tokens); hitting it is flagged")]
MaxInputTokens = Annotated[int, Field(gt=0, description="prompt limit; longer reasoning is cut "
                                      "at the end by the backend and flagged")]
GenBatchSize = Annotated[int, Field(gt=0, description="sequences decoded together: the "
                                    "transformers backend's batch; openvino runs at least 32")]
PromptLookup = Annotated[int, Field(ge=0, description="prompt-lookup speculation n-gram size "
                                    "(transformers; 0 = off)")]
Threads = Annotated[Optional[Annotated[int, Field(gt=0)]],  # noqa: UP045 - a runtime alias
                    Field(description="torch intra-op threads (default: torch's choice)")]


def arg_type(annotated: Any, flag: str) -> Callable[[str], Any]:
    """An argparse ``type=`` that validates a flag's value against a shared annotated type.

    argparse turns the ``ArgumentTypeError`` into one usage line and exit status 2.

    >>> arg_type(MaxNewTokens, "--max-new-tokens")("64")
    64
    >>> arg_type(MaxNewTokens, "--max-new-tokens")("0")
    Traceback (most recent call last):
    ...
    argparse.ArgumentTypeError: must be greater than 0 (got 0)
    """
    adapter: TypeAdapter[Any] = TypeAdapter(annotated)

    def parse(value: str) -> Any:
        try:
            return adapter.validate_python(value, strict=False)
        except ValidationError as exc:
            msg = str(exc.errors()[0].get("msg", "invalid value")).removeprefix("Value error, ")
            if msg.startswith("Input should be "):
                msg = "must be " + msg.removeprefix("Input should be ")
            raise argparse.ArgumentTypeError(f"{msg} (got {value})") from None

    parse.__name__ = flag  # argparse names the type in "invalid <name> value" messages
    return parse
