"""The fixed answer sets the output handlers know: a MovieLens rating (0.5 to 5 in steps of 0.5,
written "4.0") and the options of a questionnaire item's question (its Likert keys or letters).
Likelihood runs score every option of an item's set; None for an open answer."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from inference_core.data.records import TestItem
from inference_core.outputs.choice import parse_options, question_of
from inference_core.outputs.rating import MAX_RATING, MIN_RATING, STEP, format_rating, parse_rating


@dataclass(frozen=True)
class AnswerSet:
    """The options as an answer writes them; `values` where they are ordered numbers (for the
    error of a prediction and the expected value)."""

    options: tuple[str, ...]
    values: dict[str, float] | None
    kind: str  # the handler that knows it: rating or choice

    def gold(self, reference: str | None) -> str | None:
        """The option a reference states (read the way the handler reads a sample), or None."""
        if reference is None:
            return None
        if self.kind == "rating":
            parsed = parse_rating(reference)
            return format_rating(parsed[0]) if parsed else None
        bare = reference.strip()
        return bare if bare in self.options else None


RATINGS = tuple(format_rating(MIN_RATING + STEP * k)
                for k in range(int(round((MAX_RATING - MIN_RATING) / STEP)) + 1))


def answer_set(handlers: Sequence[str], item: TestItem) -> AnswerSet | None:
    """The item's answer set under the job's output handlers, or None (an open answer)."""
    if "rating" in handlers:
        return AnswerSet(RATINGS, {r: float(r) for r in RATINGS}, "rating")
    if "choice" in handlers:
        options = parse_options(question_of(item))
        if options is None:
            return None
        values = {k: float(k) for k in options.keys} if options.ordered else None
        return AnswerSet(options.keys, values, "choice")
    return None



