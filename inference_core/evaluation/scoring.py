"""Compute metrics.json and samples.parquet for finished run folders.

Usage: python -m inference_core.evaluate RUN_DIR [RUN_DIR...]
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from inference_core.command import CommandParser, skipped_code
from inference_core.evaluation.metrics import ItemInput, compute_metrics
from inference_core.rundir.layout import (METRICS_FILE, SAMPLES_FILE, UserFile,  # noqa: F401
                                          read_user_files)
from inference_core.rundir.writers import (SUMMARY_FILE, for_each_run_dir, read_json, write_atomic,
                                           write_bytes_atomic)

log = logging.getLogger(__name__)

# The task metrics the one-line summary shows for each scorer.
TASK_HEADLINES = {"rating": ("rating_mae", "rating_rmse", "rating_exact"),
                  "choice": ("choice_accuracy", "choice_mean_distance")}

# Explicit column types: inferred types would be `null` for columns that happen to be all
# None in a run (e.g. reference in a reference-free dataset), breaking concatenation later.
_STRING_COLUMNS = (
    "user_hash", "profile_name", "ablation", "dataset", "reference", "text", "finish_reason",
)
_INT_COLUMNS = ("record", "collection", "item", "sample_index", "output_tokens", "prompt_tokens")
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


def write_samples_parquet(rows: list[dict[str, Any]], path: Path) -> None:
    """Write rows with the `datasets` library, atomically."""
    import datasets  # heavy import, only needed here

    features = datasets.Features(
        {c: datasets.Value("string") for c in _STRING_COLUMNS}
        | {c: datasets.Value("int64") for c in _INT_COLUMNS}
    )
    ordered = datasets.Features({c: features[c] for c in SAMPLE_COLUMNS})
    # Columns, not rows: a run with no samples (every item skipped) still gets its typed table.
    table = datasets.Dataset.from_dict({c: [r[c] for r in rows] for c in SAMPLE_COLUMNS},
                                       features=ordered)
    # A progress bar per run would flood the leaderboard's log; restore the global setting after.
    was_enabled = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()
    try:
        write_atomic(path, lambda tmp: table.to_parquet(str(tmp)))
    finally:
        if was_enabled:
            datasets.enable_progress_bars()


@dataclass(frozen=True)
class RunContents:
    """Everything evaluate_run needs from a run folder's user documents."""

    dataset: str | None
    items: tuple[ItemInput, ...]
    rows: tuple[dict[str, Any], ...]
    num_users: int
    num_truncated_prompts: int


def load_run(run_dir: Path, dataset: str | None) -> RunContents:
    """Read users/*.json once into metric inputs and parquet rows."""
    items: list[ItemInput] = []
    rows: list[dict[str, Any]] = []
    num_users = truncated = 0
    for user in iter_user_docs(run_dir):
        num_users += 1
        dataset = dataset or user.dataset  # older summaries may lack "dataset"
        rows.extend(sample_rows(user, dataset))
        for it in user.items:
            items.append(ItemInput(it.generated_samples, it.reference))
            truncated += it.truncated
    return RunContents(dataset, tuple(items), tuple(rows), num_users, truncated)


def evaluate_run(run_dir: Path) -> dict[str, Any]:
    """Recompute and write metrics.json and samples.parquet for one run folder."""
    run_dir = Path(run_dir)
    summary = read_json(run_dir / SUMMARY_FILE)
    run = load_run(run_dir, summary.get("dataset"))
    metrics = {
        "dataset": run.dataset,
        "model_name": summary.get("model_name"),
        "ablation": summary.get("ablation_config"),
        "num_users": run.num_users,
        "num_truncated_prompts": run.num_truncated_prompts,
        "num_length_finishes": sum(1 for r in run.rows if r["finish_reason"] == "length"),
    }
    metrics |= compute_metrics(run.items, run.dataset, summary.get("language"),
                               summary.get("scorer"))
    write_bytes_atomic(run_dir / METRICS_FILE, orjson.dumps(metrics, option=orjson.OPT_INDENT_2))
    write_samples_parquet(list(run.rows), run_dir / SAMPLES_FILE)
    return metrics


def _fmt(value: float | None, digits: int = 2) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def summary_line(run_dir: Path, m: dict[str, Any]) -> str:
    """One-line human summary of a run's metrics."""
    return (
        f"{run_dir}: {m.get('dataset')} {m.get('model_name')} {m.get('ablation')} "
        f"items={m['num_items']} scored={m['num_scored_items']} samples={m['num_samples']} "
        f"bleu={_fmt(m['bleu_mean_of_n'])} chrf={_fmt(m['chrf_mean_of_n'])} "
        f"rougeL={_fmt(m['rouge_l_mean_of_n'])} d1={_fmt(m['distinct_1'], 3)} "
        f"d2={_fmt(m['distinct_2'], 3)} chars={_fmt(m['mean_chars'], 1)}"
        + "".join(f" {k}={_fmt(m.get(k), 3)}" for k in TASK_HEADLINES.get(m.get("scorer"), ()))
    )


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
