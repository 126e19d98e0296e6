"""choice: a free answer mapped onto the option keys of the question it answers.

The question is the item's last context turn. Likert scales ("1=非常不同意，…，5=非常同意")
give ordered keys "1".."5"; multiple choice ("A. …" on its own line or inline) gives letters.
An answer becomes its option's key: the key itself ("B", "（B）", "4分"), else the longest option
label it contains ("非常同意" before "同意"), else the closest label by character overlap
(flagged). A question without options keeps the free text.
"""
from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from typing import Any, Mapping

from inference_core.data.records import TestItem
from inference_core.outputs.stage import HandledSample, Stage, flagged, register

LIKERT_POINT = re.compile(r"(?<!\d)(\d{1,2})\s*[=＝:：]\s*([^，,；;、。）)\n/|]+)")
LETTER_OPTION = re.compile(
    r"(?:^|(?<=[\s（(]))([A-H])\s*[.．、:：)）]\s*(.+?)(?=\s+[A-H]\s*[.．、:：)）]|\n|$)", re.M)
EDGE_PUNCTUATION = " \t\n\"'“”‘’「」『』()（）[]【】.。,，:：;；!！?？"
MIN_FUZZY_RATIO = 0.5


@dataclass(frozen=True)
class Options:
    """A question's answer options: keys as the answer is written, labels as the question
    words them; Likert scales are ordered (their keys are numbers)."""

    keys: tuple[str, ...]
    labels: tuple[str, ...]
    ordered: bool


def parse_options(question: str) -> Options | None:
    """The options the question lists, or None for an open question."""
    points = [(k, v.strip()) for k, v in LIKERT_POINT.findall(question)]
    numbers = [int(k) for k, _ in points]
    if len(points) >= 3 and numbers == list(range(numbers[0], numbers[0] + len(numbers))):
        return Options(tuple(k for k, _ in points), tuple(v for _, v in points), True)
    letters = [(k, v.strip()) for k, v in LETTER_OPTION.findall(question)]
    if len(letters) >= 2 and [k for k, _ in letters] == list("ABCDEFGH"[:len(letters)]):
        return Options(tuple(k for k, _ in letters), tuple(v for _, v in letters), False)
    return None


def leading_key(answer: str, options: Options) -> str | None:
    """A key at the start of the answer: "B", "选B", "(B) 和朋友出去", "4分", "Answer: 3"."""
    keys = "|".join(map(re.escape, sorted(options.keys, key=len, reverse=True)))
    match = re.match(rf"^\s*(?:选项|选择|选|答案|answer|option)?\s*[:：]?\s*[(（\[【]?\s*({keys})"
                     rf"(?![A-Za-z0-9.])", answer, re.I if options.ordered else 0)
    return match.group(1) if match else None


def snap(answer: str, options: Options) -> tuple[str, frozenset[str]] | None:
    """(option key, how it was found) for a free answer, or None when nothing matches."""
    bare = answer.strip(EDGE_PUNCTUATION)
    if bare in options.keys:
        return bare, frozenset()
    key = leading_key(answer, options)
    if key is not None:
        return key, frozenset({"choice_snapped"})
    by_length = sorted(zip(options.labels, options.keys), key=lambda lk: len(lk[0]), reverse=True)
    for label, key in by_length:
        if label and label.lower() in answer.lower():
            return key, frozenset({"choice_snapped"})
    ratios = [(difflib.SequenceMatcher(None, bare.lower(), label.lower()).ratio(), key)
              for label, key in zip(options.labels, options.keys)]
    best_ratio, best_key = max(ratios)
    if best_ratio >= MIN_FUZZY_RATIO:
        return best_key, frozenset({"choice_snapped", "choice_fuzzy"})
    return None


def question_of(item: TestItem) -> str:
    return item.context[-1].content if item.context else ""


@register("choice")
def choice(options: Mapping[str, Any]) -> Stage:
    def stage(sample: HandledSample, item: TestItem, stop_reason: str | None,
              ) -> HandledSample | None:
        found = parse_options(question_of(item))
        if found is None:
            return flagged(sample, sample.text.strip(), "free_text")
        snapped = snap(sample.text, found)
        if snapped is None:
            return None
        key, flags = snapped
        return flagged(sample, key, *flags)

    return stage
