"""A tokenizer stand-in for the backends' text logic (stop strings, the repeated-step cut)."""

from __future__ import annotations


class CharTok:
    """One id per character: enough for logic that decodes ids to text and encodes it back."""

    def decode(self, ids: list[int], skip_special_tokens: bool = False) -> str:
        return "".join(map(chr, ids))

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        return [ord(c) for c in text]
