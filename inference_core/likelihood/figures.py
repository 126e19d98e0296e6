"""An item's likelihood figures from its scored tokens: of the whole trained target and of the
answer body alone (so a checkpoint is not credited for predicting `[ANSWER]`), and over a fixed
answer set the options' log-likelihoods, the predicted option and how it compares to the truth.

Every figure is stored in the item's user file under `likelihood` (FIELDS lists them) and as a
row of likelihood.parquet; the run's means and the leaderboard's columns are made from them.
"""
from __future__ import annotations

import math
from typing import Any, Sequence

from inference_core.engine import TokenScores
from inference_core.likelihood.targets import ScoredSequence

LN2 = math.log(2)
# The figures of a scored text; `body_` + each is the same for the answer body alone.
SPAN_FIGURES = ("tokens", "bytes", "logprob", "nll_per_token", "bits_per_byte", "greedy_match")
# An answer set's figures for an item (besides each option's own): see option_figures.
OPTION_FIGURES = ("predicted", "predicted_per_byte", "option_mass", "gold_option", "correct",
                  "abs_error", "expected", "expected_abs_error")


def span(logprobs: Sequence[float], greedy: Sequence[bool], num_bytes: int) -> dict[str, Any]:
    """Sum of log-probabilities, mean NLL per token, bits per byte, and whether every token was
    the model's top choice."""
    total = float(sum(logprobs))
    tokens = len(logprobs)
    return {"tokens": tokens, "bytes": num_bytes, "logprob": total,
            "nll_per_token": -total / tokens if tokens else math.nan,
            "bits_per_byte": -total / LN2 / num_bytes if num_bytes else math.nan,
            "greedy_match": bool(tokens) and all(greedy)}


def target_figures(sequence: ScoredSequence, scores: TokenScores) -> dict[str, Any]:
    """The whole target's figures, then the body's under `body_`."""
    start, end = sequence.body
    whole = span(scores.logprobs, scores.greedy, sequence.target_bytes)
    body = span(scores.logprobs[start:end], scores.greedy[start:end], sequence.body_bytes)
    return {**{f"target_{k}" if k in ("tokens", "bytes") else k: v for k, v in whole.items()},
            **{f"body_{k}": v for k, v in body.items()}}


def option_figures(options: Sequence[tuple[str, float, int]], gold: str | None,
                   values: dict[str, float] | None) -> dict[str, Any]:
    """Over the options (option, log-likelihood of its whole target, target bytes): the argmax,
    the argmax per byte, the probability mass all options get (of the model's whole
    distribution over answers in this format), the true option, and for ordered numeric answer
    sets the expected value under the options' renormalised probabilities and both errors."""
    best = max(options, key=lambda o: o[1])[0]
    per_byte = max(options, key=lambda o: o[1] / max(o[2], 1))[0]
    top = max(o[1] for o in options)
    weights = {o: math.exp(lp - top) for o, lp, _ in options}
    mass = math.exp(top) * sum(weights.values())
    figures: dict[str, Any] = {"predicted": best, "predicted_per_byte": per_byte,
                               "option_mass": mass, "gold_option": gold,
                               "correct": None if gold is None else best == gold,
                               "abs_error": None, "expected": None, "expected_abs_error": None}
    if values is not None:
        norm = sum(weights.values())
        expected = sum(values[o] * w for o, w in weights.items()) / norm
        figures["expected"] = expected
        if gold is not None:
            figures["abs_error"] = abs(values[best] - values[gold])
            figures["expected_abs_error"] = abs(expected - values[gold])
    return figures
