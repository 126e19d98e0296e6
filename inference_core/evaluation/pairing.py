"""Paired comparisons with a baseline: each row minus its baseline on the same items.

`--baseline` names a run folder, an ablation or a checkpoint (model name or path):
- a run folder: every complete row of the same dataset is compared with that run;
- an ablation: each row with the row of that ablation in its own series (same dataset,
  checkpoint, engine and sampling), e.g. every ablation against no_profile per checkpoint;
- a checkpoint: each row with the row of that checkpoint with the same dataset, ablation and
  sampling, e.g. fine-tuned against base model per ablation.
Items are matched by user and test-file location; rows whose item sets differ are compared on
the intersection, and their note says so.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np

from inference_core.config import ConfigError
from inference_core.evaluation import stats
from inference_core.evaluation.item_scores import ItemScores, root_flags
from inference_core.evaluation.leaderboard_rows import (Bootstrap, Comparison, LeaderboardRow,
                                                        item_keys)

log = logging.getLogger(__name__)

Scored = tuple[LeaderboardRow, ItemScores | None]
Matcher = Callable[[LeaderboardRow, LeaderboardRow], bool]


def _matcher(baseline: str, rows: Sequence[LeaderboardRow]) -> tuple[Matcher, str]:
    """How to find a row's baseline row, and how the tables name the baseline."""
    path = Path(baseline).expanduser()
    target = str(path.resolve())
    if any(r.run_dir == target for r in rows):  # a checkpoint folder is not a run folder
        return (lambda row, cand: cand.run_dir == target and cand.dataset == row.dataset,
                f"run {path.name}")
    if any(r.ablation == baseline for r in rows):
        return (lambda row, cand: cand.ablation == baseline and cand.setup() == row.setup(),
                f"ablation {baseline}")
    names = {baseline, str(path.resolve())} if path.exists() else {baseline}
    if any(_is_checkpoint(r, names) for r in rows):
        return (lambda row, cand: _is_checkpoint(cand, names)
                and (cand.dataset, cand.ablation, cand.engine, cand.sampling)
                == (row.dataset, row.ablation, row.engine, row.sampling),
                f"checkpoint {baseline}")
    raise ConfigError(f"--baseline {baseline}: no run folder, ablation, model name or checkpoint "
                      f"of the runs found is called that (ablations: "
                      f"{', '.join(sorted({r.ablation for r in rows}))})")


def _is_checkpoint(row: LeaderboardRow, names: set[str]) -> bool:
    """The row's model is called one of the names: model name, label, adapter or base path
    (the base path only for runs without an adapter, which are the base model itself)."""
    own = {row.model, row.checkpoint, row.adapter_path or row.checkpoint_path}
    return bool(own & names)


def compare(row: LeaderboardRow, scores: ItemScores, base_row: LeaderboardRow,
            base: ItemScores, label: str, boot: Bootstrap) -> Comparison:
    """Paired differences row - baseline on the items both runs have."""
    keys, base_keys = item_keys(scores), item_keys(base)
    shared, idx, base_idx = np.intersect1d(keys, base_keys, assume_unique=True,
                                           return_indices=True)
    note = None
    if len(shared) < max(len(keys), len(base_keys)):
        note = (f"item sets differ: compared on the {len(shared)} shared items "
                f"(this run {len(keys)}, baseline {len(base_keys)})")
    names = [m.name for m in row.metrics]
    results = stats.paired_differences(
        scores.values(names)[idx], base.values(names)[base_idx],
        scores.frame["user_hash"].to_numpy()[idx], boot.resamples, boot.seed, boot.confidence,
        scores.weights(names)[idx], base.weights(names)[base_idx], root_flags(names))
    return Comparison(base_row.run_dir, label, len(shared), note, tuple(zip(names, results)),
                      is_baseline=row.run_dir == base_row.run_dir)


def _no_baseline(label: str, why: str) -> Comparison:
    return Comparison("", label, 0, why, ())


def add_comparisons(scored: Sequence[Scored], baseline: str, boot: Bootstrap
                    ) -> list[LeaderboardRow]:
    """The rows, each complete one with its comparison to its baseline row."""
    rows = [row for row, _ in scored]
    matches, label = _matcher(baseline, rows)
    complete = [(r, s) for r, s in scored if r.complete and s is not None]
    out = []
    for row, scores in scored:
        if not row.complete or scores is None:
            out.append(row)
            continue
        candidates = [(r, s) for r, s in complete if matches(row, r)]
        if len(candidates) != 1:
            why = ("no baseline run for this row" if not candidates else
                   f"{len(candidates)} baseline runs match this row: name one run folder")
            out.append(replace(row, comparison=_no_baseline(label, why)))
            continue
        base_row, base_scores = candidates[0]
        out.append(replace(row, comparison=compare(row, scores, base_row, base_scores, label,
                                                   boot)))
    return out
