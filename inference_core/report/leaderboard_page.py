"""leaderboard.html: the leaderboard table (sortable by any column) and its chart, one page.

Each row links to its run's report.html by a path relative to the page, so the outputs folder can
be moved or copied as a whole. The chart is leaderboard.png, inlined as a data: URL.
"""
from __future__ import annotations

import base64
import logging
import os
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from urllib.parse import quote

from inference_core.evaluation.leaderboard_rows import Bootstrap, LeaderboardRow
from inference_core.evaluation.leaderboard_output import (HEADERS, ID_COLUMNS, TEXT_COLUMNS,
                                                          format_cell, format_interval,
                                                          likelihood_note, table_warnings,
                                                          format_paired,
                                                          metric_header, metric_names)
from inference_core.report.html import esc, page
from inference_core.rundir.writers import REPORT_FILE, SUMMARY_FILE, write_bytes_atomic

log = logging.getLogger(__name__)

HTML_FILE = "leaderboard.html"
PAIRED_ID_COLUMNS = ("dataset", "model", "ablation", "checkpoint", "sampling")


def report_href(run_dir: str | Path, out_dir: Path) -> str:
    """URL of a run's report.html, relative to the folder the leaderboard page is in."""
    target = Path(run_dir).resolve() / REPORT_FILE
    try:
        rel = os.path.relpath(target, out_dir.resolve())
    except ValueError:  # another drive (Windows): fall back to an absolute file URL
        return target.as_uri()
    return quote(Path(rel).as_posix())


def _header(name: str, label: str | None = None) -> str:
    kind = "text" if name in TEXT_COLUMNS or name in ("status", "note") else "num"
    label = label or HEADERS.get(name, name)
    label = label.replace("rouge_l", "rouge\u2011l").replace("_", " ")  # wraps at spaces only
    return (f'<th class="{kind}" data-col="{esc(name)}" data-type="{kind}" aria-sort="none">'
            f'<button type="button">{esc(label)}</button></th>')


def _cell(kind: str, sort_key: object, text: str, title: str | None = None) -> str:
    key = "" if sort_key is None else str(sort_key)
    tip = f' title="{esc(title)}"' if title else ""
    return f'<td class="{kind}" data-sort="{esc(key)}"{tip}>{text}</td>'


def _scalar_cells(row: LeaderboardRow, columns: tuple[str, ...]) -> list[str]:
    return [_cell("text" if c in TEXT_COLUMNS else "num", getattr(row, c),
                  esc(format_cell(c, getattr(row, c)))) for c in columns]


def _interval_cell(name: str, row: LeaderboardRow) -> str:
    """`mean` and, muted below it, `[low, high]`; sorted by the mean; empty for incomplete."""
    interval = row.estimate(name)
    if interval is None:
        return _cell("num", None, "-")
    text = format_interval(name, interval)
    mean, _, bounds = text.partition(" ")
    html = esc(mean) + (f' <span class="muted">{esc(bounds)}</span>' if bounds else "")
    return _cell("num", interval.mean, html, f"{interval.num_items} items, "
                                               f"{interval.num_clusters} users")


def _status_cell(row: LeaderboardRow) -> str:
    if row.complete:
        return _cell("text", row.status, esc(row.status))
    return _cell("text", row.status, f'<strong>incomplete</strong> '
                                     f'<span class="muted">{esc(row.reason)}</span>')


def _row(row: LeaderboardRow, out_dir: Path, metrics: list[str]) -> str:
    cells = [_link(row, out_dir), *_scalar_cells(row, ID_COLUMNS)]
    cells += [_interval_cell(m, row) for m in metrics]
    cells.append(_status_cell(row))
    return "<tr>" + "".join(cells) + "</tr>"


def _paired_row(row: LeaderboardRow, metrics: list[str]) -> str:
    comparison = row.comparison
    assert comparison is not None
    cells = _scalar_cells(row, PAIRED_ID_COLUMNS)
    cells.append(_cell("num", comparison.shared_items, str(comparison.shared_items)))
    for name in metrics:
        result = comparison.result(name)
        sort_key = None if result is None or comparison.is_baseline else result.diff.mean
        cells.append(_cell("num", sort_key, esc(format_paired(name, row))))
    cells.append(_cell("text", comparison.note or "", esc(comparison.note or "")))
    return "<tr>" + "".join(cells) + "</tr>"


def _paired_table(rows: Sequence[LeaderboardRow], metrics: list[str]) -> str:
    compared = [r for r in rows if r.comparison is not None]
    if not compared:
        return ""
    label = compared[0].comparison.baseline  # type: ignore[union-attr]
    headers = "".join(_header(c) for c in PAIRED_ID_COLUMNS) + _header("shared_items")
    headers += "".join(_header(f"{m}_diff", metric_header(m) + " diff") for m in metrics)
    headers += _header("note")
    return (f"<h2>Paired with the baseline ({esc(label)})</h2>"
            '<p class="muted">difference to the baseline on the same items [95% interval] and '
            "the two-sided p-value of a paired sign-flip permutation test over users</p>"
            f'<div class="table-wrap"><table class="board" id="paired"><thead><tr>{headers}'
            f"</tr></thead><tbody>{''.join(_paired_row(r, metrics) for r in compared)}"
            "</tbody></table></div>")


def _link(row: LeaderboardRow, out_dir: Path) -> str:
    """The first cell: a link to the run's report.html (or why there is none)."""
    if (Path(row.run_dir) / REPORT_FILE).is_file():
        link = (f'<a class="report-link" href="{esc(report_href(row.run_dir, out_dir))}" '
                f'title="{esc(row.run_dir)}">report</a>')
    else:
        link = f'<span class="muted" title="{esc(row.run_dir)}">no report</span>'
    return f'<td class="text">{link}</td>'


def _chart(png: Path | None) -> str:
    if png is None or not png.is_file():
        return ""
    data = base64.b64encode(png.read_bytes()).decode("ascii")
    return (f'<figure><img class="chart" alt="leaderboard chart: quality and samples/s per '
            f'ablation" src="data:image/png;base64,{data}"></figure>')


def render_leaderboard_html(rows: Sequence[LeaderboardRow], out_dir: Path,
                            png: Path | None = None, boot: Bootstrap = Bootstrap()) -> str:
    metrics = metric_names([r for r in rows if r.complete])
    headers = "".join(_header(c) for c in ID_COLUMNS)
    headers += "".join(_header(m, metric_header(m)) for m in metrics) + _header("status")
    body_rows = "".join(_row(r, out_dir, metrics) for r in rows)
    stamp = datetime.now(timezone.utc).isoformat(timespec="seconds")
    incomplete = sum(not r.complete for r in rows)
    warnings = table_warnings(rows)
    note = likelihood_note(metrics)
    body = (
        f'<header class="top"><h1>Leaderboard</h1><p class="muted">{len(rows)} runs'
        f"{f' ({incomplete} incomplete: no numbers)' if incomplete else ''} · built "
        f"{esc(stamp)} · click a column to sort, again to reverse</p>"
        f'<p class="muted">{esc(boot.describe())}; each cell is the mean '
        "[low, high]</p>"
        + (f'<p class="muted">{esc(note)}</p>' if note else "")
        + "".join(f'<p class="muted"><strong>warning:</strong> {esc(w)}</p>' for w in warnings)
        + "</header>"
        f'<div class="table-wrap"><table class="board" id="board"><thead><tr>'
        f'<th class="text">run</th>{headers}</tr></thead><tbody>{body_rows}</tbody></table></div>'
        + (f"<p class=\"muted\">no run folders (with {esc(SUMMARY_FILE)}) found</p>" if not rows
           else "")
        + _paired_table(rows, metrics)
        + _chart(png)
    )
    return page("Leaderboard", body, scripts=("leaderboard.js",))


def write_leaderboard_html(rows: Sequence[LeaderboardRow], out_dir: Path,
                           png: Path | None = None, boot: Bootstrap = Bootstrap()) -> Path:
    """Write out_dir/leaderboard.html (atomically); return its path."""
    path = out_dir / HTML_FILE
    write_bytes_atomic(path, render_leaderboard_html(rows, out_dir, png, boot).encode())
    return path


def refresh_reports(rows: Sequence[LeaderboardRow]) -> None:
    """Write each run's report.html where it is missing or older than the run's results."""
    from inference_core.evaluation.scoring import METRICS_FILE
    from inference_core.report.page import write_report_safely

    for row in rows:
        run_dir = Path(row.run_dir)
        report = run_dir / REPORT_FILE
        sources = [run_dir / SUMMARY_FILE, run_dir / METRICS_FILE]
        if not sources[0].is_file():  # a crashed run: nothing to report on
            continue
        newest = max(p.stat().st_mtime for p in sources if p.is_file())
        if not report.is_file() or report.stat().st_mtime < newest:
            log.info("writing %s", report)
            write_report_safely(run_dir)
