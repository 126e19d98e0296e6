"""The summary's `likelihood` block, from the items' figures in the user files: how many items
were scored, every unscored one named with why, how many tokenized their target merged with the
prompt's last token, and the training loss of the reference targets over the whole run (NLL per
token, weighted by tokens: what the training loop reports).

Kept free of pandas and pyarrow: the merge imports it.
"""
from __future__ import annotations

import math
from collections import Counter
from typing import Any, Iterable, Mapping, Sequence

from inference_core.rundir.layout import LIKELIHOOD_KEY, UserItem

MODES_THAT_SCORE = ("likelihood", "both")
NO_FIGURES = "no likelihood figures in the user file"


def figures_of(item: UserItem) -> Mapping[str, Any] | None:
    """The item's likelihood figures, or None (a generation run's item)."""
    figures = item.extra.get(LIKELIHOOD_KEY)
    return figures if isinstance(figures, Mapping) else None


def option_shares(logprobs: Sequence[float]) -> list[float]:
    """Each option's share of the options' probability mass (what `expected` weighs by)."""
    top = max(logprobs, default=0.0)
    weights = [math.exp(lp - top) for lp in logprobs]
    total = sum(weights)
    return [w / total for w in weights]


def worst_first(figures: Mapping[str, Any] | None) -> tuple[int, float]:
    """An item's place when listing the worst predicted first: wrong answer-set predictions,
    then the rest, each by the answer's NLL per token (highest first); unscored items last."""
    if figures is None or not figures.get("scored"):
        return 2, 0.0
    nll = figures.get("body_nll_per_token")
    return (0 if figures.get("correct") is False else 1,
            -nll if isinstance(nll, (int, float)) else math.inf)


def pooled_loss(nll: float, tokens: int) -> float | None:
    return nll / tokens if tokens else None


def likelihood_summary(items: Iterable[tuple[str, UserItem]]) -> dict[str, Any]:
    """Scored and unscored items (user, location, why), merged boundaries, and the token-weighted
    NLL per token of the reference targets and of their answer bodies."""
    scored = merged = with_options = 0
    unscored: list[dict[str, Any]] = []
    totals = Counter[str]()
    for user_hash, item in items:
        figures = figures_of(item)
        if figures is None or not figures.get("scored"):
            why = NO_FIGURES if figures is None else str(figures.get("why"))
            unscored.append({"user_hash": user_hash, "location": item.location.as_dict(),
                             "why": why})
            continue
        scored += 1
        merged += bool(figures.get("merged_boundary"))
        with_options += "options" in figures
        if figures.get("target_tokens"):  # the item has a reference target
            totals["items"] += 1
            for span in ("target", "body"):
                totals[f"{span}_tokens"] += int(figures[f"{span}_tokens"])
                totals[f"{span}_nll"] += -float(figures["logprob" if span == "target"
                                                        else "body_logprob"])
    return {
        "scored_items": scored,
        "unscored_items": len(unscored),
        "unscored_reasons": dict(Counter(u["why"] for u in unscored)),
        "unscored": unscored,
        "merged_boundary_items": merged,
        "items_with_options": with_options,
        "reference_items": totals["items"],
        "target_tokens": totals["target_tokens"],
        # The training loss on these users: sum of the targets' NLL over their tokens.
        "loss": pooled_loss(totals["target_nll"], totals["target_tokens"]),
        "body_tokens": totals["body_tokens"],
        "body_loss": pooled_loss(totals["body_nll"], totals["body_tokens"]),
    }
