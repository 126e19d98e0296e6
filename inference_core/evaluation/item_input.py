"""What is scored of one data item, in a module of its own below the metrics and the task
scorers that both read it (metrics.compute_metrics calls the scorers)."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)  # one per item of a run, held while it is scored
class ItemInput:
    """The generated samples of one data item and its reference, if the dataset has one."""

    samples: tuple[str, ...]
    reference: str | None = None
