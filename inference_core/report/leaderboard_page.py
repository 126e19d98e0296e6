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

from inference_core.report.html import esc, page
from inference_core.evaluation.leaderboard import COLUMNS, MD_HEADERS, LeaderboardRow, format_cell
from inference_core.rundir.writers import REPORT_FILE, SUMMARY_FILE, write_bytes_atomic

log = logging.getLogger(__name__)

HTML_FILE = "leaderboard.html"
_TEXT_COLUMNS = {"dataset", "model", "ablation", "engine"}


def report_href(run_dir: str | Path, out_dir: Path) -> str:
    """URL of a run's report.html, relative to the folder the leaderboard page is in."""
    target = Path(run_dir).resolve() / REPORT_FILE
    try:
        rel = os.path.relpath(target, out_dir.resolve())
    except ValueError:  # another drive (Windows): fall back to an absolute file URL
        return target.as_uri()
    return quote(Path(rel).as_posix())


def _header(name: str) -> str:
    kind = "text" if name in _TEXT_COLUMNS else "num"
    label = MD_HEADERS.get(name, name).replace("rouge_l", "rouge\u2011l").replace("_", " ")  # wraps
    return (f'<th class="{kind}" data-col="{esc(name)}" data-type="{kind}" aria-sort="none">'
            f'<button type="button">{esc(label)}</button></th>')


def _row(row: LeaderboardRow, out_dir: Path) -> str:
    cells = [_link(row, out_dir)]
    for name in COLUMNS:
        if name == "run_dir":
            continue
        value = getattr(row, name)
        sort_key = "" if value is None else str(value)
        kind = "text" if name in _TEXT_COLUMNS else "num"
        cells.append(f'<td class="{kind}" data-sort="{esc(sort_key)}">'
                     f'{esc(format_cell(name, value))}</td>')
    return "<tr>" + "".join(cells) + "</tr>"


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
                            png: Path | None = None) -> str:
    headers = "".join(_header(c) for c in COLUMNS if c != "run_dir")
    body_rows = "".join(_row(r, out_dir) for r in rows)
    stamp = datetime.now(timezone.utc).isoformat(timespec="seconds")
    body = (
        f'<header class="top"><h1>Leaderboard</h1><p class="muted">{len(rows)} runs · built '
        f"{esc(stamp)} · click a column to sort, again to reverse</p></header>"
        f'<div class="table-wrap"><table class="board" id="board"><thead><tr>'
        f'<th class="text">run</th>{headers}</tr></thead><tbody>{body_rows}</tbody></table></div>'
        + (f"<p class=\"muted\">no run folders (with {esc(SUMMARY_FILE)}) found</p>" if not rows
           else "")
        + _chart(png)
    )
    return page("Leaderboard", body, scripts=("leaderboard.js",))


def write_leaderboard_html(rows: Sequence[LeaderboardRow], out_dir: Path,
                           png: Path | None = None) -> Path:
    """Write out_dir/leaderboard.html (atomically); return its path."""
    path = out_dir / HTML_FILE
    write_bytes_atomic(path, render_leaderboard_html(rows, out_dir, png).encode())
    return path


def refresh_reports(rows: Sequence[LeaderboardRow]) -> None:
    """Write each run's report.html where it is missing or older than the run's results."""
    from inference_core.evaluation.scoring import METRICS_FILE
    from inference_core.report.page import write_report_safely

    for row in rows:
        run_dir = Path(row.run_dir)
        report = run_dir / REPORT_FILE
        sources = [run_dir / SUMMARY_FILE, run_dir / METRICS_FILE]
        newest = max(p.stat().st_mtime for p in sources if p.is_file())
        if not report.is_file() or report.stat().st_mtime < newest:
            log.info("writing %s", report)
            write_report_safely(run_dir)
