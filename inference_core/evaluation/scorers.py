"""Task scorers chosen by `dataset.scorer`, for datasets where text overlap says little.

text: nothing beyond the text metrics (BLEU/chrF/ROUGE-L/distinct) every run gets.
rating: MovieLens ratings: rating_mae, rating_rmse, rating_exact (share of exact samples).
choice: questionnaire answers: choice_accuracy, and choice_mean_distance on Likert points.

Every figure pools the samples of the referenced items (each sample counts once); samples or
references that cannot be read are counted, never guessed.
"""
from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Sequence
from typing import Any

from inference_core.evaluation.item_input import ItemInput
from inference_core.outputs.choice import EDGE_PUNCTUATION
from inference_core.outputs.rating import parse_rating

Scorer = Callable[[Sequence[ItemInput]], dict[str, Any]]
SCORERS: dict[str, Scorer] = {}
DEFAULT_SCORER = "text"


def register(name: str) -> Callable[[Scorer], Scorer]:
    def add(scorer: Scorer) -> Scorer:
        SCORERS[name] = scorer
        return scorer
    return add


def scorer_names() -> list[str]:
    return sorted(SCORERS)


def task_metrics(scorer: str | None, items: Sequence[ItemInput]) -> dict[str, Any]:
    """`{"scorer": name, ...its metrics}`; unknown names are a ValueError naming the choices."""
    name = scorer or DEFAULT_SCORER
    if name not in SCORERS:
        raise ValueError(f"scorer {name!r} is not known: choose one of {', '.join(scorer_names())}")
    return {"scorer": name, **SCORERS[name](items)}


@register("text")
def text_scorer(items: Sequence[ItemInput]) -> dict[str, Any]:
    return {}


def read_rating(text: str | None) -> float | None:
    """A rating from a handled sample ("4.0") or, for runs without the handler, free text."""
    if text is None:
        return None
    parsed = parse_rating(text)
    return parsed[0] if parsed else None


@register("rating")
def rating_scorer(items: Sequence[ItemInput]) -> dict[str, Any]:
    errors: list[float] = []
    unread_samples = unread_references = scored_items = 0
    for item in items:
        if item.reference is None:
            continue
        reference = read_rating(item.reference)
        if reference is None:
            unread_references += 1
            continue
        scored_items += 1
        for sample in item.samples:
            value = read_rating(sample)
            if value is None:
                unread_samples += 1
            else:
                errors.append(value - reference)
    return {
        "rating_scored_items": scored_items,
        "rating_scored_samples": len(errors),
        "rating_unreadable_samples": unread_samples,
        "rating_unreadable_references": unread_references,
        "rating_mae": statistics.fmean(abs(e) for e in errors) if errors else None,
        "rating_rmse": math.sqrt(statistics.fmean(e * e for e in errors)) if errors else None,
        "rating_exact": statistics.fmean(abs(e) < 1e-9 for e in errors) if errors else None,
    }


def normalize_choice(text: str) -> str:
    return text.strip().strip(EDGE_PUNCTUATION).casefold()


def likert_point(text: str) -> int | None:
    """The scale point of a Likert answer key ("4"), None for letters and free text."""
    return int(text) if text.isdigit() else None


@register("choice")
def choice_scorer(items: Sequence[ItemInput]) -> dict[str, Any]:
    hits: list[bool] = []
    distances: list[int] = []
    scored_items = 0
    for item in items:
        if item.reference is None or not item.samples:
            continue
        scored_items += 1
        reference = normalize_choice(item.reference)
        point = likert_point(reference)
        for sample in item.samples:
            answer = normalize_choice(sample)
            hits.append(answer == reference)
            if point is not None and likert_point(answer) is not None:
                distances.append(abs(likert_point(answer) - point))
    return {
        "choice_scored_items": scored_items,
        "choice_scored_samples": len(hits),
        "choice_accuracy": statistics.fmean(hits) if hits else None,
        # Only where both answer and reference are scale points: letters have no order.
        "choice_ordered_samples": len(distances),
        "choice_mean_distance": statistics.fmean(distances) if distances else None,
    }
