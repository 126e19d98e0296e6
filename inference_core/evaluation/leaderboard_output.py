"""The leaderboard's files: markdown and CSV tables, a JSON copy, and the picture with error bars.

Markdown shows a metric as `mean [low, high]`; the CSV has `<metric>`, `<metric>_ci_low` and
`<metric>_ci_high` (and `<metric>_diff`, `_diff_ci_low`, `_diff_ci_high`, `_p` against the
baseline). Incomplete runs are rows with status `incomplete` and a reason, and no numbers.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson

# metric_header is re-exported: the report page names it from here.
from inference_core.evaluation.leaderboard_rows import (Bootstrap, LeaderboardRow,
                                                        metric_header)
from inference_core.evaluation.metrics import REFERENCE_METRICS
from inference_core.evaluation.stats import Interval
from inference_core.likelihood.table import LIKELIHOOD_METRICS, LOWER_IS_BETTER
from inference_core.rundir.writers import write_bytes_atomic

# Leading columns of every table, in order; a run's folder is the last column.
ID_COLUMNS = ("dataset", "model", "ablation", "engine", "checkpoint", "sampling", "n", "items",
              "users", "samples", "samples_per_s", "output_tokens_per_s", "speed_of",
              "mean_chars")
TEXT_COLUMNS = frozenset({"dataset", "model", "ablation", "engine", "checkpoint", "sampling",
                          "speed_of"})
# Always in the CSV (empty where a dataset has no references) so its header is stable.
STANDARD_METRICS = tuple(f"{m}_{kind}_of_n" for m in REFERENCE_METRICS
                         for kind in ("mean", "best")) + ("distinct_1", "distinct_2")
HEADERS = {"samples_per_s": "samples/s", "output_tokens_per_s": "output tok/s",
           "speed_of": "speed of", "mean_chars": "chars", "run_dir": "run"}
# 0-1 ratios, 1-5 scale errors, and the likelihood figures (NLL of about 1, bits, 0-1 shares).
_THREE_DIGITS = ("distinct_", "rating_", "choice_", *LIKELIHOOD_METRICS)
# Below this many users a percentile bootstrap interval is too narrow (it cannot see users it
# never drew); the tables say so rather than let a reader trust it.
FEW_USERS = 10


def likelihood_note(names: Sequence[str]) -> str | None:
    """Which of the table's likelihood columns are better lower (losses, errors)."""
    lower = [m for m in names if m in LOWER_IS_BETTER]
    if not lower:
        return None
    return (f"likelihood columns: lower is better for {', '.join(lower)} (a negative paired "
            "difference favours the row); loss and body_loss pool NLL over tokens (the "
            "training loss), the others are means over items")


def table_warnings(rows: Sequence[LeaderboardRow]) -> list[str]:
    """What a reader must know before trusting some rows: too few users, unseeded samples."""
    warnings = []
    few = sum(1 for r in rows if r.complete and r.users is not None and r.users < FEW_USERS)
    if few:
        warnings.append(f"{few} rows have fewer than {FEW_USERS} users: their intervals are too "
                        "narrow (read them as rough); the paired p-value stays valid (exact up "
                        "to 12 users)")
    unseeded = [r for r in rows if r.complete and r.seeded is False]
    if unseeded:
        warnings.append(f"{len(unseeded)} rows were not seeded per request (the engine or "
                        "endpoint took no seed: the same command gives other samples): "
                        + ", ".join(f"{r.dataset}/{r.ablation} ({r.run_dir})" for r in unseeded))
    return warnings


def metric_names(rows: Sequence[LeaderboardRow]) -> list[str]:
    """The standard metrics, then any other a scorer produced, in order of appearance."""
    names = dict.fromkeys(STANDARD_METRICS)
    for row in rows:
        names.update(dict.fromkeys(m.name for m in row.metrics))
    return list(names)


def format_number(name: str, value: float | None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if name == "mean_chars":
        return f"{value:.1f}"
    return f"{value:.3f}" if name.startswith(_THREE_DIGITS) else f"{value:.2f}"


def format_cell(name: str, value: Any) -> str:
    """A scalar column's cell: numbers rounded per column, `-` for missing, pipes escaped."""
    if value is None or isinstance(value, float):
        return format_number(name, value)
    return str(value).replace("|", "\\|")


def format_interval(name: str, interval: Interval | None) -> str:
    if interval is None:
        return "-"
    text = format_number(name, interval.mean)
    if interval.low is not None and interval.high is not None:
        text += f" [{format_number(name, interval.low)}, {format_number(name, interval.high)}]"
    return text


def format_p(p_value: float | None) -> str:
    if p_value is None:
        return "-"
    return f"{p_value:.3f}" if p_value >= 0.001 else "<0.001"


def format_paired(name: str, row: LeaderboardRow) -> str:
    """`+1.23 [0.40, 2.10] p=0.004` for one metric of a compared row."""
    comparison = row.comparison
    if comparison is None or comparison.is_baseline:
        return "baseline" if comparison is not None and comparison.results else "-"
    result = comparison.result(name)
    if result is None:
        return "-"
    diff = result.diff
    text = format_number(name, diff.mean)
    if not text.strip("-0."):  # rounds to zero: neither "+0.00" nor "-0.00"
        text = text.lstrip("-")
    elif diff.mean > 0:
        text = "+" + text
    if diff.low is not None and diff.high is not None:
        text += f" [{format_number(name, diff.low)}, {format_number(name, diff.high)}]"
    return f"{text} p={format_p(result.p_value)}"


def _md_table(headers: Sequence[str], body: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    return lines + ["| " + " | ".join(cells) + " |" for cells in body]


def render_markdown(rows: Sequence[LeaderboardRow], boot: Bootstrap = Bootstrap()) -> str:
    complete = [r for r in rows if r.complete]
    names = metric_names(complete)
    out = ["# Leaderboard", "", f"{boot.describe()}. Every row is one run folder.", ""]
    note = likelihood_note(names)
    if note:
        out += [f"Note: {note}.", ""]
    for warning in table_warnings(complete):
        out += [f"Warning: {warning}.", ""]
    out += _md_table(
        [HEADERS.get(c, c) for c in ID_COLUMNS] + [metric_header(m) for m in names] + ["run"],
        [[format_cell(c, getattr(r, c)) for c in ID_COLUMNS]
         + [format_interval(m, r.estimate(m)) for m in names] + [format_cell("run", r.run_dir)]
         for r in complete])
    compared = [r for r in complete if r.comparison is not None]
    if compared:
        label = compared[0].comparison.baseline  # type: ignore[union-attr]
        out += ["", f"## Paired with the baseline ({label})", "",
                "Difference to the baseline on the same items [95% interval], and the two-sided "
                "p-value of a paired sign-flip permutation test over users.", ""]
        out += _md_table(
            ["dataset", "model", "ablation", "checkpoint", "sampling", "shared items"]
            + [metric_header(m) for m in names] + ["note"],
            [[format_cell(c, getattr(r, c)) for c in
              ("dataset", "model", "ablation", "checkpoint", "sampling")]
             + [str(r.comparison.shared_items)]  # type: ignore[union-attr]
             + [format_paired(m, r) for m in names]
             + [format_cell("note", r.comparison.note or "")]  # type: ignore[union-attr]
             for r in compared])
    incomplete = [r for r in rows if not r.complete]
    if incomplete:
        out += ["", "## Incomplete runs (no numbers)", ""]
        out += _md_table(["dataset", "model", "ablation", "run", "reason"],
                         [[format_cell(c, getattr(r, c)) for c in
                           ("dataset", "model", "ablation", "run_dir", "reason")]
                          for r in incomplete])
    return "\n".join(out) + "\n"


def csv_columns(rows: Sequence[LeaderboardRow]) -> list[str]:
    names = metric_names(rows)
    cols = list(ID_COLUMNS)
    for m in names:
        cols += [m, f"{m}_ci_low", f"{m}_ci_high"]
    if any(r.comparison is not None for r in rows):
        cols += ["baseline", "baseline_run_dir", "shared_items", "pair_note"]
        for m in names:
            cols += [f"{m}_diff", f"{m}_diff_ci_low", f"{m}_diff_ci_high", f"{m}_p"]
    return cols + ["status", "reason", "ci_resamples", "ci_seed", "ci_confidence", "run_dir"]


def _interval_cells(prefix: str, interval: Interval | None) -> dict[str, Any]:
    if interval is None:
        return {}
    return {prefix: interval.mean, f"{prefix}_ci_low": interval.low,
            f"{prefix}_ci_high": interval.high}


def row_record(row: LeaderboardRow, boot: Bootstrap) -> dict[str, Any]:
    """The row as one flat dict: the CSV line and the JSON object."""
    record: dict[str, Any] = {c: getattr(row, c) for c in ID_COLUMNS}
    for metric in row.metrics:
        record |= _interval_cells(metric.name, metric.interval)
    if row.comparison is not None:
        c = row.comparison
        record |= {"baseline": c.baseline, "baseline_run_dir": c.baseline_run_dir,
                   "shared_items": c.shared_items, "pair_note": c.note}
        for name, result in c.results:
            if result is not None:
                record |= _interval_cells(f"{name}_diff", result.diff)
                record[f"{name}_p"] = result.p_value
    return record | {"status": row.status, "reason": row.reason, "ci_resamples": boot.resamples,
                     "ci_seed": boot.seed, "ci_confidence": boot.confidence,
                     "run_dir": row.run_dir}


def render_csv(rows: Sequence[LeaderboardRow], boot: Bootstrap = Bootstrap()) -> str:
    buf = io.StringIO()
    cols = csv_columns(rows)
    writer = csv.DictWriter(buf, fieldnames=cols, lineterminator="\n", restval="")
    writer.writeheader()
    for row in rows:
        record = row_record(row, boot)
        writer.writerow({c: "" if record.get(c) is None else record[c] for c in cols})
    return buf.getvalue()


def render_json(rows: Sequence[LeaderboardRow], boot: Bootstrap = Bootstrap()) -> bytes:
    doc = {"bootstrap": {"resamples": boot.resamples, "seed": boot.seed,
                         "confidence": boot.confidence, "method": boot.describe()},
           "rows": [row_record(r, boot) for r in rows]}
    return orjson.dumps(doc, option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY)


def write_leaderboard(rows: Sequence[LeaderboardRow], out_dir: Path,
                      boot: Bootstrap = Bootstrap()) -> dict[str, Path]:
    """Write leaderboard.md, .csv, .json and .png into out_dir; return their paths."""
    from inference_core.evaluation.leaderboard_plot import render_png

    paths = {ext: out_dir / f"leaderboard.{ext}" for ext in ("md", "csv", "json", "png")}
    write_bytes_atomic(paths["md"], render_markdown(rows, boot).encode())
    write_bytes_atomic(paths["csv"], render_csv(rows, boot).encode())
    write_bytes_atomic(paths["json"], render_json(rows, boot))
    render_png(rows, paths["png"])
    return paths

