"""The leaderboard's row types and names, below everything that builds, pairs, writes or draws
rows (leaderboard.py, pairing.py, leaderboard_output.py, leaderboard_plot.py, the report page)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from inference_core.evaluation import stats
from inference_core.evaluation.item_scores import ItemScores

COMPLETE, INCOMPLETE = "complete", "incomplete"


@dataclass(frozen=True)
class Bootstrap:
    """How the intervals are computed; printed with every table so a number can be reproduced."""

    resamples: int = stats.DEFAULT_RESAMPLES
    seed: int = stats.DEFAULT_SEED
    confidence: float = stats.CONFIDENCE

    def describe(self) -> str:
        return (f"{self.confidence:.0%} intervals: percentile bootstrap over users (a user's "
                f"items are resampled together), {self.resamples} resamples, seed {self.seed}")


@dataclass(frozen=True)
class MetricEstimate:
    """A metric's mean over the items it applies to and its interval (None: applies to none)."""

    name: str
    interval: stats.Interval | None


@dataclass(frozen=True)
class Comparison:
    """This row minus the baseline row on the items both have."""

    baseline_run_dir: str
    baseline: str  # how the baseline row is named in the tables
    shared_items: int
    note: str | None  # set when the two item sets differ
    results: tuple[tuple[str, stats.PairedResult | None], ...]
    is_baseline: bool = False

    def result(self, name: str) -> stats.PairedResult | None:
        return dict(self.results).get(name)


@dataclass(frozen=True)
class LeaderboardRow:
    """One run folder; the scalar fields are the leading columns of every table."""

    dataset: str
    model: str
    ablation: str
    engine: str
    checkpoint: str
    sampling: str
    n: int | None
    items: int | None
    users: int | None
    samples: int | None
    samples_per_s: float | None
    output_tokens_per_s: float | None
    mean_chars: float | None
    run_dir: str
    # Whose rate samples/s is: "own run", or "shared start (N jobs)" where one engine start
    # served N jobs (the session's rate: a job's own span overlaps the others').
    speed_of: str = "own run"
    # False: the samples did not draw from per-request seeds (an endpoint that cannot take one),
    # so the same command gives other samples; None: not recorded.
    seeded: bool | None = None
    metrics: tuple[MetricEstimate, ...] = ()
    status: str = COMPLETE
    reason: str | None = None
    comparison: Comparison | None = None
    # The raw paths behind the `checkpoint` label, for --baseline to match a path given to it.
    checkpoint_path: str = ""
    adapter_path: str | None = None

    @property
    def complete(self) -> bool:
        return self.status == COMPLETE

    def estimate(self, name: str) -> stats.Interval | None:
        return next((m.interval for m in self.metrics if m.name == name), None)

    def setup(self) -> tuple[str, str, str, str, str]:
        """Everything but the ablation that makes runs comparable as one series."""
        return (self.dataset, self.model, self.checkpoint, self.engine, self.sampling)


def item_keys(scores: ItemScores) -> np.ndarray:
    """One hashable key per item (user + location), for matching items across runs."""
    frame = scores.frame
    return (frame["user_hash"].astype(str) + "|" + frame["record"].astype(str) + "|"
            + frame["collection"].astype(str) + "|" + frame["item"].astype(str)).to_numpy()


def metric_header(name: str) -> str:
    """`chrf mean-of-n` / `chrf best-of-n`: the two kinds are never one column."""
    for kind in ("mean", "best"):
        if name.endswith(f"_{kind}_of_n"):
            return f"{name[: -len(f'_{kind}_of_n')]} {kind}-of-n"
    return name
