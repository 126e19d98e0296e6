"""Output files: per-user JSON, the filled test_leaderboard.json and inference_summary.json.

Every file is written atomically (temporary file in the same folder, fsync, rename), so a kill at
any moment leaves either the old file or the new one, never a torn one.
"""
from __future__ import annotations

import hashlib
import os
import re
import tempfile
from pathlib import Path
from typing import Any, Iterable

import orjson

from .records import Location

USERS_DIR = "users"
SLUG_CHARS = re.compile(r"[^A-Za-z0-9_-]+")


def write_json_atomic(path: Path, obj: Any, indent: bool = True) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = orjson.dumps(obj, option=orjson.OPT_INDENT_2 if indent else 0)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)  # the rename itself survives a crash
    finally:
        os.close(dir_fd)


def safe_user_filename(user_hash: str) -> str:
    """A file name no id can steer: a short readable slug plus a digest of the whole id.

    The slug keeps only [A-Za-z0-9_-] (no dots, no separators), so nothing escapes users/; the
    digest makes two different ids land in two different files.
    """
    digest = hashlib.sha256(user_hash.encode("utf-8", "surrogatepass")).hexdigest()[:24]
    slug = SLUG_CHARS.sub("_", user_hash).strip("_")[:48]
    return f"{slug}-{digest}.json" if slug else f"user-{digest}.json"


def user_file_path(output_dir: Path, user_hash: str) -> Path:
    return output_dir / USERS_DIR / safe_user_filename(user_hash)


def fill_leaderboard(raw_test: list[Any], continuations: dict[Location, list[str]]) -> list[Any]:
    """The input test records, each generated item gaining `continuations` (in place)."""
    for loc, texts in continuations.items():
        raw_test[loc.record]["task"]["task_behavior_collections"][loc.collection]["data"][
            loc.item]["continuations"] = list(texts)
    return raw_test


def read_json(path: Path) -> Any:
    return orjson.loads(path.read_bytes())


def iter_user_files(output_dir: Path) -> Iterable[Path]:
    folder = output_dir / USERS_DIR
    return sorted(folder.glob("*.json")) if folder.is_dir() else []
