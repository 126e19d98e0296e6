"""rating: a MovieLens rating (0.5-5 in steps of 0.5) read from free text, written as "4.0".

Reads "4", "4.5", "Rating: 3.5/5", "8/10", "4 out of 5", full-width digits and Chinese
"四星半" / "三点五分". The first number in range wins, so a year before the rating does not
count; a value between steps is snapped to the nearest half and flagged.
"""
from __future__ import annotations

import math
import re
import unicodedata
from typing import Any, Iterator, Mapping

from inference_core.data.records import TestItem
from inference_core.outputs.stage import HandledSample, Stage, flagged, register

MIN_RATING, MAX_RATING, STEP = 0.5, 5.0, 0.5

NUMBER = re.compile(
    r"(?<![\d.])(\d+(?:\.\d+)?)(?!\.?\d)(?:\s*(?:/|out\s+of|满分)\s*(\d+(?:\.\d+)?))?", re.I)
ZH_DIGITS = {"一": 1, "二": 2, "两": 2, "三": 3, "四": 4, "五": 5}
ZH_RATING = re.compile(r"([一二两三四五])(?:点([五]))?\s*(?:颗星|星|分)(半)?")


def candidates(text: str) -> Iterator[tuple[float, bool]]:
    """(value on the 0-5 scale, rescaled from another scale) for every rating-like number."""
    for match in NUMBER.finditer(text):
        value, scale = float(match.group(1)), match.group(2)
        if scale is None:
            yield value, False
        elif float(scale) > 0:
            yield value * MAX_RATING / float(scale), float(scale) != MAX_RATING
    for match in ZH_RATING.finditer(text):
        half = 0.5 if match.group(2) or match.group(3) else 0.0
        yield ZH_DIGITS[match.group(1)] + half, False


def parse_rating(text: str) -> tuple[float, frozenset[str]] | None:
    """The rating in the text and what it took to read it, or None when it has none in range."""
    normal = unicodedata.normalize("NFKC", text)  # full-width digits and slashes
    for value, rescaled in candidates(normal):
        if MIN_RATING - STEP / 2 < value <= MAX_RATING + 1e-9:
            snapped = min(MAX_RATING, max(MIN_RATING, math.floor(value / STEP + 0.5) * STEP))
            flags = set()
            if abs(snapped - value) > 1e-9:
                flags.add("rating_snapped")
            if rescaled:
                flags.add("rating_rescaled")
            return snapped, frozenset(flags)
    return None


def format_rating(value: float) -> str:
    return f"{value:.1f}"


@register("rating")
def rating(options: Mapping[str, Any]) -> Stage:
    def stage(sample: HandledSample, item: TestItem, stop_reason: str | None,
              ) -> HandledSample | None:
        parsed = parse_rating(sample.text)
        if parsed is None:
            return None
        value, flags = parsed
        return flagged(sample, format_rating(value), *flags)

    return stage
