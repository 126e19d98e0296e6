"""Output files: per-user JSON, the filled test_leaderboard.json and inference_summary.json.

Every file is written atomically (temporary file in the same folder, fsync, rename), so a kill at
any moment leaves either the old file or the new one, never a torn one.
"""
from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterable

import orjson

from inference_core.data.records import Location

# Names live in layout.py; re-exported because many modules import them from here.
from inference_core.rundir.layout import (LEADERBOARD_FILE, REPORT_FILE, SUMMARY_FILE,  # noqa: F401
                                          USERS_DIR, safe_user_filename, user_file_names,
                                          user_file_path)


def write_atomic(path: Path, write: Callable[[Path], None]) -> None:
    """Call write(tmp) on a temporary file beside `path`, fsync it, then rename it into place.

    Same folder so the rename stays on one filesystem and readers never see a half file.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        write(tmp)
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; outputs are read by others too
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)  # the rename itself survives a crash
    finally:
        os.close(dir_fd)


def write_bytes_atomic(path: Path, data: bytes) -> None:
    write_atomic(path, lambda tmp: tmp.write_bytes(data))


def write_json_atomic(path: Path, obj: Any, indent: bool = True) -> None:
    # Serialized first: an object that cannot be written never touches the old file.
    write_bytes_atomic(path, orjson.dumps(obj, option=orjson.OPT_INDENT_2 if indent else 0))


def fill_leaderboard(raw_test: list[Any], continuations: dict[Location, list[str]]) -> list[Any]:
    """The input test records, each generated item gaining `continuations` (in place)."""
    for loc, texts in continuations.items():
        raw_test[loc.record]["task"]["task_behavior_collections"][loc.collection]["data"][
            loc.item]["continuations"] = list(texts)
    return raw_test


def read_json(path: Path) -> Any:
    return orjson.loads(path.read_bytes())


def iter_user_files(output_dir: Path) -> Iterable[Path]:
    """Every *.json path under users/ (own or stray); read them with layout.read_user_files."""
    return user_file_names(output_dir)


def for_each_run_dir(run_dirs: Iterable[Path], action: Callable[[Path], object]) -> int:
    """Command-line helper: `action` on every run folder; exit code 1 if one was not a run."""
    failed = 0
    for run_dir in run_dirs:
        if not (run_dir / SUMMARY_FILE).is_file():
            logging.getLogger(__name__).error("%s: no %s, not a run folder", run_dir, SUMMARY_FILE)
            failed += 1
            continue
        action(run_dir)
    return 1 if failed else 0
