"""Shared pieces of the converters: source errors, converted records and the atomic writer."""
from __future__ import annotations

import hashlib
import logging
import os
import secrets
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import orjson

from inference_core.data.loader import TEST_FILE, TRAIN_FILE

log = logging.getLogger(__name__)

REFERENCES_FILE = "references.json"


class SourceError(Exception):
    """A raw source that cannot be converted; the message names the file and, when known, the line."""

    def __init__(self, path: str | os.PathLike[str], line: int | None, message: str) -> None:
        self.path = str(path)
        self.line = line
        self.message = message
        where = self.path if line is None else f"{self.path}, line {line}"
        super().__init__(f"{where}: {message}")


@dataclass(frozen=True, slots=True)
class SourceTurn:
    """One earlier turn of a dialogue: who spoke and what they said."""

    source: str
    content: str


@dataclass(frozen=True, slots=True)
class ConvertedItem:
    """One behaviour of a user: its context, its cue (prefix) and the user's own text."""

    context: tuple[SourceTurn, ...]
    prefix: str
    text: str
    timestamp: str | None = None
    rating: int | float | None = None

    def as_dict(self, with_continuation: bool) -> dict[str, Any]:
        """The item in the benchmark schema; a test item leaves out `continuation`."""
        item: dict[str, Any] = {
            "context": [{"source": t.source, "content": t.content, "timestamp": None} for t in self.context],
            "continuation_prefix": self.prefix,
        }
        if with_continuation:
            item["continuation"] = self.text
        item["timestamp"] = self.timestamp
        if self.rating is not None:
            item["rating"] = self.rating
        return item


@dataclass(frozen=True)
class ConvertedUser:
    """A user with their items in order; the last item becomes the test item."""

    user_hash: str
    profile: Mapping[str, Any]
    items: tuple[ConvertedItem, ...]


@dataclass(frozen=True)
class TaskText:
    """The fixed texts of one dataset's task and behaviour collection."""

    description: str
    collection_type: str
    type_desc: str


@dataclass
class ConversionStats:
    """Rows and users left out, by reason (mutable while converting)."""

    skipped_rows: Counter[str] = field(default_factory=Counter)
    dropped_users: Counter[str] = field(default_factory=Counter)


@dataclass(frozen=True)
class ConversionSummary:
    """What a conversion wrote and what it left out."""

    dataset: str
    out_dir: str
    users: int
    train_items: int
    test_items: int
    skipped_rows: dict[str, int]
    dropped_users: dict[str, int]

    def report(self) -> str:
        """A short human-readable report, one fact per line."""
        lines = [
            f"{self.dataset}: wrote {self.out_dir}",
            f"  users: {self.users}",
            f"  train items: {self.train_items}",
            f"  test items: {self.test_items}",
        ]
        lines += [f"  skipped rows ({reason}): {n}" for reason, n in sorted(self.skipped_rows.items())]
        lines += [f"  dropped users ({reason}): {n}" for reason, n in sorted(self.dropped_users.items())]
        return "\n".join(lines)


def stable_hash(*parts: str) -> str:
    """A short, stable id from the given parts (sha1 of the parts joined by '/')."""
    return hashlib.sha1("/".join(parts).encode("utf-8")).hexdigest()[:16]


def keep_users(users: Iterable[ConvertedUser], min_items: int, stats: ConversionStats) -> Iterator[ConvertedUser]:
    """Yield the users with at least `min_items` items; count the others."""
    reason = f"fewer than {min_items} items"
    for user in users:
        if len(user.items) < min_items:
            stats.dropped_users[reason] += 1
        else:
            yield user


def user_record(user: ConvertedUser, items: Iterable[ConvertedItem], task: TaskText, test: bool) -> dict[str, Any]:
    """One user record of train.json (`test=False`) or test_leaderboard.json (`test=True`)."""
    collection = {
        "type": task.collection_type,
        "type_desc": task.type_desc,
        "data": [item.as_dict(with_continuation=not test) for item in items],
    }
    return {
        "user_hash": user.user_hash,
        "user": {"profile": dict(user.profile), "personality": {}},
        "task": {"description": task.description, "task_behavior_collections": [collection]},
    }


class _ArrayWriter:
    """Writes a JSON array one record at a time (indented like OPT_INDENT_2 on the whole array)."""

    def __init__(self, fh: IO[bytes]) -> None:
        self._fh = fh
        self.count = 0
        fh.write(b"[")

    def add(self, record: Any) -> None:
        self._fh.write(b"\n  " if self.count == 0 else b",\n  ")
        # JSON strings escape newlines, so every raw newline here is indentation.
        self._fh.write(orjson.dumps(record, option=orjson.OPT_INDENT_2).replace(b"\n", b"\n  "))
        self.count += 1

    def close(self) -> None:
        self._fh.write(b"\n]\n" if self.count else b"]\n")


def write_dataset(
    dataset: str, out_dir: Path, users: Iterable[ConvertedUser], task: TaskText, stats: ConversionStats
) -> ConversionSummary:
    """Write train.json, test_leaderboard.json and references.json; all three or none appear."""
    out_dir.mkdir(parents=True, exist_ok=True)
    names = (TRAIN_FILE, TEST_FILE, REFERENCES_FILE)
    temps: dict[str, Path] = {}
    try:
        with ExitStack() as stack:
            handles = {name: stack.enter_context(_temp_file(out_dir, name, temps)) for name in names}
            counts = _write_records(users, task, handles)
        for name in names:
            os.replace(temps[name], out_dir / name)
    finally:
        for path in temps.values():
            path.unlink(missing_ok=True)
    return ConversionSummary(
        dataset=dataset,
        out_dir=str(out_dir),
        users=counts[0],
        train_items=counts[1],
        test_items=counts[0],
        skipped_rows=dict(stats.skipped_rows),
        dropped_users=dict(stats.dropped_users),
    )


def _temp_file(out_dir: Path, name: str, temps: dict[str, Path]) -> IO[bytes]:
    """A new hidden file beside `name` (mode from the umask, like the final file's would be)."""
    path = out_dir / f".{name}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
    fh = path.open("xb")
    temps[name] = path
    return fh


def _write_records(users: Iterable[ConvertedUser], task: TaskText, handles: Mapping[str, IO[bytes]]) -> tuple[int, int]:
    """Stream every user into the open files; returns (users, train items)."""
    train, test = _ArrayWriter(handles[TRAIN_FILE]), _ArrayWriter(handles[TEST_FILE])
    references: dict[str, str] = {}
    seen: set[str] = set()
    train_items = 0
    for user in users:
        if user.user_hash in seen:
            raise ValueError(f"two users share the user_hash {user.user_hash!r}")
        seen.add(user.user_hash)
        *history, last = user.items
        train.add(user_record(user, history, task, test=False))
        references[f"{test.count}/0/0"] = last.text
        test.add(user_record(user, [last], task, test=True))
        train_items += len(history)
    train.close()
    test.close()
    handles[REFERENCES_FILE].write(orjson.dumps(references, option=orjson.OPT_INDENT_2) + b"\n")
    return test.count, train_items
