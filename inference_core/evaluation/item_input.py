"""What is scored of one data item, in a module of its own below the metrics and the task
scorers that both read it (metrics.compute_metrics calls the scorers), and how the per-item
tables (item_scores.parquet, likelihood.parquet) name an item and a pooled metric's weight."""
from __future__ import annotations

from dataclasses import dataclass

# An item is its user and its location in the test file: the same in every run of a dataset.
KEY_COLUMNS = ("user_hash", "record", "collection", "item")
# `<metric>_weight`: what a pooled metric weighs the item by (its samples, its tokens).
WEIGHT_SUFFIX = "_weight"


@dataclass(frozen=True, slots=True)  # one per item of a run, held while it is scored
class ItemInput:
    """The generated samples of one data item and its reference, if the dataset has one."""

    samples: tuple[str, ...]
    reference: str | None = None
