"""How close a quantized model's text stays to its original's, and whether it is degenerate.

chrF (character n-gram F-score, sacrebleu) between the two models' greedy outputs for the same
prompts: 100 is identical text. Degenerate text is what a broken checkpoint or kernel produces
("rewrewrew...", "newnewnew..."): one short fragment repeated over most of the sample.
"""
from __future__ import annotations

import re
from typing import Sequence

# A fragment of 1-12 characters repeated at least 4 times in a row (whitespace ignored).
_REPEAT = re.compile(r"(.{1,12}?)\1{3,}", re.DOTALL)
# Shorter samples are not judged: "hahaha" is a fine answer.
MIN_CHARS = 16


def repeated_share(text: str) -> float:
    """The largest share of `text` (whitespace removed) covered by one fragment's repeats."""
    squeezed = "".join(text.split())
    if not squeezed:
        return 0.0
    longest = max((m.end() - m.start() for m in _REPEAT.finditer(squeezed)), default=0)
    return longest / len(squeezed)


def is_degenerate(text: str, share: float = 0.5) -> bool:
    """True when one short fragment, repeated, makes up at least `share` of a long sample."""
    squeezed = "".join(text.split())
    return len(squeezed) >= MIN_CHARS and repeated_share(text) >= share


def chrf_between(hypotheses: Sequence[str], references: Sequence[str]) -> float:
    """Corpus chrF of `hypotheses` (the quantized model) against `references` (the original)."""
    from sacrebleu.metrics import CHRF

    if len(hypotheses) != len(references):
        raise ValueError(f"{len(hypotheses)} hypotheses for {len(references)} references")
    if not hypotheses:
        return 0.0
    return float(CHRF().corpus_score(list(hypotheses), [list(references)]).score)


def exact_matches(a: Sequence[str], b: Sequence[str]) -> int:
    return sum(x == y for x, y in zip(a, b))
