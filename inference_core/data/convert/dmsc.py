"""DMSC (Douban Movie Short Comments) CSV -> benchmark (one user per Douban username)."""
from __future__ import annotations

import csv
import logging
import math
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

from inference_core.data.convert.common import (
    ConversionStats,
    ConversionSummary,
    ConvertedItem,
    ConvertedUser,
    SourceError,
    TaskText,
    keep_users,
    stable_hash,
    write_dataset,
)

log = logging.getLogger(__name__)

COLUMNS = (
    "ID", "Movie_Name_EN", "Movie_Name_CN", "Crawl_Date", "Number", "Username", "Date", "Star", "Comment", "Like",
)
PROGRESS_EVERY = 500_000

TASK = TaskText(
    description="Write this Douban user's short review of the movie.",
    collection_type="review",
    type_desc="Short movie reviews this Douban user wrote, each after the movie's name.",
)


def csv_rows(path: Path) -> Iterator[tuple[int, list[str]]]:
    """Yield (first physical line number, fields) for every non-empty CSV record, streaming."""
    try:
        fh = path.open(encoding="utf-8-sig", newline="")
    except OSError as exc:
        raise SourceError(path, None, f"cannot open: {exc.strerror or exc}") from exc
    with fh:
        reader = csv.reader(fh)
        start = 1
        try:
            for row in reader:
                if row:
                    yield start, row
                start = reader.line_num + 1
        except (csv.Error, UnicodeDecodeError) as exc:
            raise SourceError(path, start, f"unreadable CSV record: {exc}") from exc


def column_indices(path: Path, header: Sequence[str]) -> dict[str, int]:
    """Column name -> index; an unnamed leading index column is allowed."""
    names = [name.strip() for name in header]
    missing = [col for col in COLUMNS if col not in names]
    if missing:
        raise SourceError(path, 1, f"missing column(s) {', '.join(missing)}; header is {','.join(names)}")
    return {col: names.index(col) for col in COLUMNS}


def parse_star(text: str) -> int | float | None:
    """The rating as a number (int when whole), None when not a number."""
    try:
        value = float(text)
    except ValueError:
        return None
    if not math.isfinite(value):
        return None
    return int(value) if value.is_integer() else value


def review_of(row: Sequence[str], cols: dict[str, int], stats: ConversionStats) -> tuple[str, ConvertedItem] | None:
    """(username, review item) for one row, or None (counted) when the row cannot be used."""
    username, comment, date = row[cols["Username"]].strip(), row[cols["Comment"]].strip(), row[cols["Date"]].strip()
    movie = row[cols["Movie_Name_CN"]].strip() or row[cols["Movie_Name_EN"]].strip()
    star = parse_star(row[cols["Star"]].strip())
    reason = (
        "empty comment" if not comment
        else "missing Username" if not username
        else "missing Date" if not date
        else "missing movie name" if not movie
        else "Star is not a number" if star is None
        else None
    )
    if reason:
        stats.skipped_rows[reason] += 1
        return None
    # Few movies and dates, many rows: share their strings.
    prefix = sys.intern(f"{movie}: ")
    return username, ConvertedItem((), prefix, comment, timestamp=sys.intern(date), rating=star)


def read_reviews(path: Path, stats: ConversionStats) -> dict[str, list[ConvertedItem]]:
    """username -> reviews in file order (users in order of first appearance)."""
    rows = csv_rows(path)
    first = next(rows, None)
    if first is None:
        raise SourceError(path, 1, "empty file: no header")
    cols = column_indices(path, first[1])
    n_columns = len(first[1])
    reviews: dict[str, list[ConvertedItem]] = {}
    for count, (lineno, row) in enumerate(rows, 1):
        if len(row) != n_columns:
            raise SourceError(path, lineno, f"expected {n_columns} columns, found {len(row)}")
        found = review_of(row, cols, stats)
        if found:
            reviews.setdefault(found[0], []).append(found[1])
        if count % PROGRESS_EVERY == 0:
            log.info("dmsc: %d rows read, %d users so far", count, len(reviews))
    return reviews


def users_in_date_order(reviews: dict[str, list[ConvertedItem]]) -> Iterator[ConvertedUser]:
    """Each user with reviews sorted by date (file order for ties); emptied from `reviews` as it goes."""
    for username in list(reviews):
        items = sorted(reviews.pop(username), key=lambda item: item.timestamp or "")
        yield ConvertedUser(stable_hash("dmsc", username), {"name": username}, tuple(items))


def convert_dmsc(csv_path: str | Path, out_dir: str | Path, min_items: int = 2) -> ConversionSummary:
    """Convert DMSC.csv and write the benchmark files into `out_dir`."""
    if min_items < 1:
        raise ValueError("min_items must be at least 1")
    stats = ConversionStats()
    reviews = read_reviews(Path(csv_path), stats)
    log.info("dmsc: %d users with at least one review", len(reviews))
    users = users_in_date_order(reviews)
    return write_dataset("dmsc", Path(out_dir), keep_users(users, min_items, stats), TASK, stats)
