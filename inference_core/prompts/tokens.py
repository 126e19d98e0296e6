"""Token ids of prompt texts that share a long per-user prefix, tokenized once.

A text is split where its item part starts, snapped back to just after a newline that a
non-space character follows: byte-level BPE tokenizers (GPT-2, Llama 3, Qwen, SmolLM) never merge
across that point, so prefix ids + item ids equal the ids of the whole text. The first split of
every builder is checked against a whole-text tokenization; a tokenizer that disagrees (some
SentencePiece models) gets whole-text tokenization from then on.
"""
from __future__ import annotations

import logging
from array import array
from typing import Any

log = logging.getLogger(__name__)


def ids_of(tokenizer: Any, texts: list[str]) -> list[list[int]]:
    """One batched call to the (fast) tokenizer; no special tokens added."""
    if not texts:
        return []
    return tokenizer(texts, add_special_tokens=False)["input_ids"]


def safe_split(text: str, limit: int) -> int:
    """The last position <= limit that follows a newline and precedes a non-space character."""
    j = text.rfind("\n", 0, limit)
    while j != -1:
        if j + 1 < len(text) and j + 1 <= limit and not text[j + 1].isspace():
            return j + 1
        j = text.rfind("\n", 0, j)
    return 0


def common_prefix_length(a: str, b: str) -> int:
    n = min(len(a), len(b))
    if a[:n] == b[:n]:
        return n
    lo, hi = 0, n  # binary search on prefix equality: C-speed slices, O(log n) of them
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if a[:mid] == b[:mid]:
            lo = mid
        else:
            hi = mid - 1
    return lo


class PrefixTokenizer:
    """Tokenizes texts through a cache of shared prefixes (one cache per user)."""

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer
        self.split_ok: bool | None = None  # None until the first split is checked

    def whole(self, text: str) -> array:
        return array("i", self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def encode(self, text: str, prefix: str, cache: dict[str, array]) -> array:
        """ids of `text`, reusing the ids of `prefix` when text starts with it."""
        if self.split_ok is False or not prefix or not text.startswith(prefix):
            return self.whole(text)
        head = cache.get(prefix)
        if head is None:
            head = cache[prefix] = self.whole(prefix)
        ids = head + array("i", self.tokenizer(text[len(prefix):],
                                               add_special_tokens=False)["input_ids"])
        if self.split_ok is None:
            self.split_ok = ids == self.whole(text)
            if not self.split_ok:
                log.warning("this tokenizer merges across line starts: prompts are tokenized "
                            "whole (slower, same ids)")
                return self.whole(text)
        return ids
