"""Compute metrics.json and samples.parquet for finished run folders.

Usage: python -m inference_core.evaluate RUN_DIR [RUN_DIR...]
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import orjson

from inference_core.command import CommandParser, skipped_code
from inference_core.evaluation import stats
from inference_core.evaluation.background import ItemKey, KnownScores, item_key
from inference_core.evaluation.item_scores import (ItemScoreRows, ItemScores, location_key,
                                                   with_likelihood, write_item_scores)
from inference_core.evaluation import metrics as scorer
from inference_core.evaluation.metrics import ItemInput, MetricTotals, language_for_dataset
from inference_core.evaluation.metrics import ItemScores as SampleScores
from inference_core.likelihood.summary import MODES_THAT_SCORE
from inference_core.likelihood.table import (LIKELIHOOD_METRICS, LikelihoodTable,
                                             write_likelihood_parquet)
from inference_core.rundir.layout import (LIKELIHOOD_FILE, METRICS_FILE, SAMPLES_FILE,  # noqa: F401
                                          UserFile, read_user_files)
from inference_core.rundir.writers import (SUMMARY_FILE, for_each_run_dir, read_json, write_atomic,
                                           write_bytes_atomic)

log = logging.getLogger(__name__)

# The task metrics the one-line summary shows for each scorer.
TASK_HEADLINES = {"rating": ("rating_mae", "rating_rmse", "rating_exact"),
                  "choice": ("choice_accuracy", "choice_mean_distance")}
LIKELIHOOD_HEADLINES = ("loss", "body_nll_per_token", "bits_per_byte", "option_accuracy",
                        "option_mae")

# Explicit column types: inferred types would be `null` for columns that happen to be all
# None in a run (e.g. reference in a reference-free dataset), breaking concatenation later.
_STRING_COLUMNS = (
    "user_hash", "profile_name", "ablation", "dataset", "reference", "text", "finish_reason",
)
_INT_COLUMNS = ("record", "collection", "item", "sample_index", "output_tokens", "prompt_tokens")
# Rows per parquet row group: a few MB of text, written as the user files are read.
ROWS_PER_GROUP = 20_000
SAMPLE_COLUMNS = (
    "user_hash", "profile_name", "record", "collection", "item", "sample_index", "ablation",
    "dataset", "reference", "text", "output_tokens", "prompt_tokens", "finish_reason",
)


def iter_user_docs(run_dir: Path) -> Iterator[UserFile]:
    """The run's user files in file-name order, so outputs are deterministic; damaged and stray
    files are named in the log and left out."""
    return read_user_files(run_dir)


def _at(values: Sequence[Any] | None, index: int) -> Any:
    """values[index], or None when the list is missing or shorter than the samples."""
    return values[index] if values is not None and index < len(values) else None


def sample_rows(user: UserFile, dataset: str | None) -> list[dict[str, Any]]:
    """One flat row per generated sample of one user file."""
    rows = []
    for item in user.items:
        loc = item.location
        for idx, text in enumerate(item.generated_samples):
            rows.append({
                # Text even for a numeric id: a parquet column holds one type (the user files
                # and the leaderboard keep the id as the input wrote it).
                "user_hash": user.key,
                "profile_name": user.profile_name,
                "record": loc.record,
                "collection": loc.collection,
                "item": loc.item,
                "sample_index": idx,
                "ablation": user.ablation,
                "dataset": user.dataset or dataset,
                "reference": item.reference,
                "text": text,
                "output_tokens": _at(item.output_tokens, idx),
                "prompt_tokens": item.prompt_tokens,
                "finish_reason": _at(item.finish_reasons, idx),
            })
    return rows


def samples_schema() -> Any:
    """samples.parquet's Arrow schema, with the `datasets` features in its metadata."""
    import datasets  # heavy import, only needed here

    features = datasets.Features(
        {c: datasets.Value("string") for c in _STRING_COLUMNS}
        | {c: datasets.Value("int64") for c in _INT_COLUMNS}
    )
    return datasets.Features({c: features[c] for c in SAMPLE_COLUMNS}).arrow_schema


def write_samples_parquet(users: Iterable[UserFile], path: Path, dataset: str | None = None,
                          rows_per_group: int = ROWS_PER_GROUP) -> None:
    """One row per sample, written a row group at a time (atomically): the rows of a large run
    are never all in memory. A run with no samples still gets its typed, empty table."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = samples_schema()

    def write(tmp: Path) -> None:
        with pq.ParquetWriter(str(tmp), schema) as out:
            rows: list[dict[str, Any]] = []
            for user in users:
                rows += sample_rows(user, dataset)
                if len(rows) >= rows_per_group:
                    out.write_table(pa.Table.from_pylist(rows, schema=schema))
                    rows = []
            out.write_table(pa.Table.from_pylist(rows, schema=schema))

    write_atomic(path, write)


def run_items(users: Sequence[UserFile]) -> list[tuple[ItemKey, ItemInput]]:
    """Every item on disk with its key, in file order."""
    return [(item_key(u, it.location.key()), ItemInput(it.generated_samples, it.reference))
            for u in users for it in u.items]


def item_scores_in_order(entries: Sequence[tuple[ItemKey, ItemInput]], language: str,
                         known: KnownScores | None) -> Iterator[SampleScores]:
    """Each entry's scores, in order: known ones unpickled one at a time as they are reached,
    the others scored first, together (score_items spreads them over the cores)."""
    unknown = [item for key, item in entries
               if known is None or not known.has(key, item, language)]
    fresh = iter(scorer.score_items(unknown, language))
    for key, item in entries:
        scores = known.lookup(key, item, language) if known is not None else None
        yield scores if scores is not None else next(fresh)


def evaluate_run(run_dir: Path, users: Sequence[UserFile] | None = None,
                 known: KnownScores | None = None) -> dict[str, Any]:
    """Recompute and write metrics.json, samples.parquet, likelihood.parquet (a run that scores
    likelihoods) and item_scores.parquet for one run.

    `users`: the run's user files if the caller has read them; `known`: scores computed while
    the run generated (only those whose item on disk is unchanged are used). Each item's scores
    are added to the totals and the per-item table as they come, never all held.
    """
    run_dir = Path(run_dir)
    summary = read_json(run_dir / SUMMARY_FILE)
    users = list(iter_user_docs(run_dir)) if users is None else users
    dataset = summary.get("dataset") or next((u.dataset for u in users if u.dataset), None)
    language = summary.get("language") or language_for_dataset(dataset)
    mode = summary.get("mode") or "generate"
    # An item with no samples (a likelihood run's) has nothing to score.
    entries = [(key, item) for key, item in run_items(users) if item.samples]
    totals, rows = MetricTotals(language), ItemScoreRows(summary.get("scorer"))
    for (key, item), scores in zip(entries, item_scores_in_order(entries, language, known)):
        totals.add(item, scores)
        rows.add(location_key(*key), item, scores)
    metrics = {
        "dataset": dataset,
        "model_name": summary.get("model_name"),
        "ablation": summary.get("ablation_config"),
        "mode": mode,
        "num_users": len(users),
        "num_truncated_prompts": sum(it.truncated for u in users for it in u.items),
        "num_length_finishes": sum(_at(it.finish_reasons, i) == "length" for u in users
                                   for it in u.items for i in range(len(it.generated_samples))),
    }
    text = totals.result(summary.get("scorer"))
    # A likelihood run has no text metrics: only the facts every run has.
    metrics |= ({k: text[k] for k in ("language", "bleu_tokenize", "scorer")}
                if mode == "likelihood" else text)
    item_table = rows.table()
    write_samples_parquet(users, run_dir / SAMPLES_FILE, dataset)
    if mode in MODES_THAT_SCORE:
        written = write_likelihood_parquet(users, run_dir / LIKELIHOOD_FILE)
        item_table = with_likelihood(item_table, written.metrics)
        metrics["likelihood"] = likelihood_block(item_table, written)
    write_bytes_atomic(run_dir / METRICS_FILE, orjson.dumps(metrics, option=orjson.OPT_INDENT_2))
    # After samples.parquet (and likelihood.parquet), so the leaderboard finds this cache fresh
    # and scores nothing again.
    write_item_scores(run_dir, item_table)
    return metrics


def likelihood_block(scores: ItemScores, written: LikelihoodTable) -> dict[str, Any]:
    """metrics.json's `likelihood`: the item counts, then each likelihood metric's mean with the
    leaderboard's bootstrap interval over users (the same resamples and seed: the same numbers).
    """
    names = [m for m in LIKELIHOOD_METRICS if m in scores.metrics]
    intervals = stats.mean_intervals(scores.values(names), scores.frame["user_hash"].to_numpy(),
                                     stats.DEFAULT_RESAMPLES, stats.DEFAULT_SEED,
                                     stats.CONFIDENCE, scores.weights(names))
    block: dict[str, Any] = dict(written.counts)
    block["bootstrap"] = {"resamples": stats.DEFAULT_RESAMPLES, "seed": stats.DEFAULT_SEED,
                          "confidence": stats.CONFIDENCE, "clusters": "users"}
    for name, interval in zip(names, intervals):
        block[name] = None if interval is None else {
            "mean": interval.mean, "ci_low": interval.low, "ci_high": interval.high,
            "items": interval.num_items, "users": interval.num_clusters}
    return block


def _fmt(value: float | None, digits: int = 2) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def summary_line(run_dir: Path, m: dict[str, Any]) -> str:
    """One-line human summary of a run's metrics (text metrics, likelihood figures, or both)."""
    line = f"{run_dir}: {m.get('dataset')} {m.get('model_name')} {m.get('ablation')}"
    if "num_items" in m:
        line += (
            f" items={m['num_items']} scored={m['num_scored_items']} samples={m['num_samples']} "
            f"bleu={_fmt(m['bleu_mean_of_n'])} chrf={_fmt(m['chrf_mean_of_n'])} "
            f"rougeL={_fmt(m['rouge_l_mean_of_n'])} d1={_fmt(m['distinct_1'], 3)} "
            f"d2={_fmt(m['distinct_2'], 3)} chars={_fmt(m['mean_chars'], 1)}"
            + "".join(f" {k}={_fmt(m.get(k), 3)}"
                      for k in TASK_HEADLINES.get(m.get("scorer"), ())))
    figures = m.get("likelihood")
    if figures:
        line += (f" likelihood: scored={figures['scored_items']} "
                 f"unscored={figures['unscored_items']}"
                 + "".join(f" {k}={_fmt((figures.get(k) or {}).get('mean'), 3)}"
                           for k in LIKELIHOOD_HEADLINES if figures.get(k)))
    return line


def main(argv: Sequence[str] | None = None) -> int:
    parser = CommandParser("python -m inference_core.evaluate",
                           "recompute metrics.json and samples.parquet of run folders")
    parser.add_argument("run_dirs", nargs="+", type=Path, metavar="RUN_DIR")
    args = parser.parse_args(argv)
    parser.require_folders(args.run_dirs)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    return skipped_code(for_each_run_dir(args.run_dirs, lambda run_dir: log.info(
        "%s", summary_line(run_dir, evaluate_run(run_dir)))), args.run_dirs)


if __name__ == "__main__":
    raise SystemExit(main())
