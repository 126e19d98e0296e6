"""likelihood.parquet: the likelihood figures of every item as its user file holds them, one row
per item (`option` null) and one row per option of its answer set (that option's target: its
log-likelihood, tokens, bytes, NLL per token, bits per byte and share of the options' mass);
and the per-item metric columns made of the item rows, which metrics.json's means and the
leaderboard's intervals and paired tests use (evaluation/item_scores.py joins them to the text
metrics).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from inference_core.evaluation.item_input import KEY_COLUMNS, WEIGHT_SUFFIX
from inference_core.likelihood.figures import LN2, OPTION_FIGURES, SPAN_FIGURES
from inference_core.likelihood.summary import figures_of, option_shares
from inference_core.rundir.layout import UserFile
from inference_core.rundir.writers import write_atomic

ROWS_PER_GROUP = 20_000
SPAN_TYPES = {"tokens": pa.int64(), "bytes": pa.int64(), "logprob": pa.float64(),
              "nll_per_token": pa.float64(), "bits_per_byte": pa.float64(),
              "greedy_match": pa.bool_()}
OPTION_TYPES = {"predicted": pa.string(), "predicted_per_byte": pa.string(),
                "option_mass": pa.float64(), "gold_option": pa.string(), "correct": pa.bool_(),
                "abs_error": pa.float64(), "expected": pa.float64(),
                "expected_abs_error": pa.float64()}


def whole_target(name: str) -> str:
    """The whole target's column of a span figure (figures.target_figures' names)."""
    return f"target_{name}" if name in ("tokens", "bytes") else name


SCHEMA = pa.schema(
    [("user_hash", pa.string()), ("profile_name", pa.string()), ("dataset", pa.string()),
     ("ablation", pa.string()), ("record", pa.int64()), ("collection", pa.int64()),
     ("item", pa.int64()), ("option", pa.string()), ("reference", pa.string()),
     ("scored", pa.bool_()), ("why", pa.string()), ("merged_boundary", pa.bool_()),
     ("context_tokens", pa.int64())]
    + [(whole_target(k), SPAN_TYPES[k]) for k in SPAN_FIGURES]
    + [(f"body_{k}", SPAN_TYPES[k]) for k in SPAN_FIGURES]
    + [(k, OPTION_TYPES[k]) for k in OPTION_FIGURES]
    # An option row's share of the options' probability mass (what `expected` weighs by).
    + [("option_probability", pa.float64())])

# Per-item metric column -> the item row's figure it is (booleans as 0/1).
METRIC_SOURCES = {
    "nll_per_token": "nll_per_token", "bits_per_byte": "bits_per_byte",
    "greedy_match": "greedy_match", "body_nll_per_token": "body_nll_per_token",
    "body_bits_per_byte": "body_bits_per_byte", "body_greedy_match": "body_greedy_match",
    # The training loss: NLL per token pooled over every target token of the run.
    "loss": "nll_per_token", "body_loss": "body_nll_per_token",
    "option_accuracy": "correct", "option_mae": "abs_error",
    "option_expected_mae": "expected_abs_error", "option_mass": "option_mass",
}
LIKELIHOOD_METRICS = tuple(METRIC_SOURCES)
POOLED_BY_TOKENS = {"loss": "target_tokens", "body_loss": "body_tokens"}
LOWER_IS_BETTER = frozenset({"nll_per_token", "bits_per_byte", "body_nll_per_token",
                             "body_bits_per_byte", "loss", "body_loss", "option_mae",
                             "option_expected_mae"})


def option_rows(key: dict[str, Any], options: Sequence[dict[str, Any]]
                ) -> Iterator[dict[str, Any]]:
    """One row per option: its whole target's figures and its share of the options' mass."""
    for option, share in zip(options, option_shares([o["logprob"] for o in options])):
        logprob, tokens, size = option["logprob"], option["tokens"], option["bytes"]
        yield {**key, "option": option["option"], "scored": True, "logprob": logprob,
               "target_tokens": tokens, "target_bytes": size,
               "nll_per_token": -logprob / tokens if tokens else None,
               "bits_per_byte": -logprob / LN2 / size if size else None,
               "option_probability": share}


def likelihood_rows(user: UserFile) -> Iterator[dict[str, Any]]:
    """The user's item rows, each followed by its option rows; items without figures (a
    generation run's) have none."""
    for item in user.items:
        figures = figures_of(item)
        if figures is None:
            continue
        loc = item.location
        key = {"user_hash": user.key, "profile_name": user.profile_name,
               "dataset": user.dataset, "ablation": user.ablation, "record": loc.record,
               "collection": loc.collection, "item": loc.item}
        yield {**key, "option": None, "reference": item.reference,
               **{k: v for k, v in figures.items() if k != "options"}}
        yield from option_rows(key, figures.get("options") or ())


def metric_table(rows: pa.Table) -> pa.Table:
    """The item rows' metric columns (KEY_COLUMNS first; `<metric>_weight` for the pooled)."""
    items = rows.filter(pc.is_null(rows["option"]))
    columns = {k: items[k] for k in KEY_COLUMNS}
    for name, source in METRIC_SOURCES.items():
        columns[name] = pc.cast(items[source], pa.float64())
    for name, tokens in POOLED_BY_TOKENS.items():
        columns[name + WEIGHT_SUFFIX] = pc.cast(items[tokens], pa.float64())
    return pa.table(columns)


def metric_frame(tables: Sequence[pa.Table]) -> pd.DataFrame:
    """The metric columns as one frame, less the metrics no item has (no answer set: no
    option_*; no reference: no NLL)."""
    table = (pa.concat_tables(tables) if tables else
             metric_table(SCHEMA.empty_table()))
    frame = table.to_pandas()
    empty = [m for m in LIKELIHOOD_METRICS if frame[m].isna().all()]
    return frame.drop(columns=empty + [m + WEIGHT_SUFFIX for m in empty
                                       if m in POOLED_BY_TOKENS])


@dataclass(frozen=True)
class LikelihoodTable:
    """What writing likelihood.parquet leaves for the metrics: the per-item metric columns and
    the item counts."""

    metrics: pd.DataFrame
    counts: dict[str, int]


def item_counts(rows: pa.Table) -> dict[str, int]:
    items = rows.filter(pc.is_null(rows["option"]))
    scored = pc.fill_null(items["scored"], False)
    return {"items": items.num_rows,
            "scored_items": pc.sum(scored).as_py() or 0,
            "unscored_items": items.num_rows - (pc.sum(scored).as_py() or 0),
            "items_with_options": items.num_rows - items["option_mass"].null_count,
            "merged_boundary_items": pc.sum(pc.fill_null(items["merged_boundary"],
                                                         False)).as_py() or 0}


def write_likelihood_parquet(users: Iterable[UserFile], path: Path,
                             rows_per_group: int = ROWS_PER_GROUP) -> LikelihoodTable:
    """likelihood.parquet (atomically), a row group at a time: the rows of a large run are
    never all held; a run without figures gets its typed, empty table."""
    metrics: list[pa.Table] = []
    counts: dict[str, int] = {}

    def flush(out: pq.ParquetWriter, rows: list[dict[str, Any]]) -> None:
        batch = pa.Table.from_pylist(rows, schema=SCHEMA)
        out.write_table(batch)
        metrics.append(metric_table(batch))
        for name, value in item_counts(batch).items():
            counts[name] = counts.get(name, 0) + value

    def write(tmp: Path) -> None:
        with pq.ParquetWriter(str(tmp), SCHEMA) as out:
            rows: list[dict[str, Any]] = []
            for user in users:
                rows += likelihood_rows(user)
                if len(rows) >= rows_per_group:
                    flush(out, rows)
                    rows = []
            flush(out, rows)

    write_atomic(path, write)
    return LikelihoodTable(metric_frame(metrics), counts)


def read_metric_frame(path: Path) -> pd.DataFrame:
    """The per-item metric columns of a likelihood.parquet."""
    return metric_frame([metric_table(pq.read_table(path))])
