"""Token ids of prompt texts that share a long per-user prefix, tokenized once.

A text is split where its item part starts, snapped back to a line edge where the tokenizer's
pre-tokenizer splits the text (BPE never merges across pre-token edges), so prefix ids + item ids equal the ids of the whole text where the pre-tokenizer agrees
(checked on a window around the split point). The first split of
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


WINDOW = 32  # characters either side of a split point that its pre-tokenization may depend on
MAX_TRIES = 16


def pieces(pre: Any, text: str) -> list[tuple[str, tuple[int, int]]]:
    return pre.pre_tokenize_str(text)


def boundary_ok(pre: Any, text: str, k: int) -> bool:
    """Whether the tokenizer's pre-tokenizer splits `text` at k, and the text before k alone
    ends in the same pieces (no merge, lookahead or greedy run crosses k)."""
    if pre is None:
        return True  # no pre-tokenizer to ask: the first split of the builder is checked whole
    start = max(0, k - WINDOW)
    head = text[start:k]
    around = pieces(pre, text[start:k + WINDOW])
    if not any(end == len(head) for _, (_, end) in around):
        return False
    return [p for p, (_, end) in around if end <= len(head)] == [p for p, _ in pieces(pre, head)]


def safe_split(text: str, limit: int, pre: Any = None) -> int:
    """The last line edge <= limit (just before or after a newline) where the text can be
    tokenized in two parts with the same ids as whole; 0 when none is found."""
    k = limit
    for _ in range(MAX_TRIES):
        j = text.rfind("\n", 0, k)
        if j == -1:
            return 0
        for cut in (j + 1, j):
            if 0 < cut <= limit and cut < len(text) and boundary_ok(pre, text, cut):
                return cut
        k = j
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
        backend = getattr(tokenizer, "backend_tokenizer", None)
        self.pre_tokenizer = getattr(backend, "pre_tokenizer", None)

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
