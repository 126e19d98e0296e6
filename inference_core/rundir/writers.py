"""Output files: per-user JSON, the filled test_leaderboard.json and inference_summary.json.

Every file is written atomically (temporary file in the same folder, fsync, rename), so a kill at
any moment leaves either the old file or the new one, never a torn one. User files, written by
the thousand, are made durable in batches instead (SyncBatch).
"""
from __future__ import annotations

import logging
import os
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO, Callable, Iterable, Iterator, Sequence

import orjson

from inference_core.rundir.faults import stopped_by_os_error
# Names live in layout.py; re-exported because many modules import them from here.
from inference_core.rundir.layout import (LEADERBOARD_FILE, REPORT_FILE, SUMMARY_FILE,  # noqa: F401
                                          USERS_DIR, UserFile, safe_user_filename,
                                          user_file_names, user_file_path)


def write_atomic(path: Path, write: Callable[[Path], None], durable: bool = True) -> None:
    """Call write(tmp) on a temporary file beside `path`, fsync it, then rename it into place.

    Same folder so the rename stays on one filesystem and readers never see a half file.
    `durable=False` leaves the two fsyncs to a SyncBatch: the rename is still atomic.
    """
    fd, tmp = temp_file_beside(path)
    os.close(fd)
    try:
        write(tmp)
        if durable:
            with open(tmp, "rb") as handle:
                os.fsync(handle.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; outputs are read by others too
        rename_into_place(tmp, path, durable)
    finally:
        tmp.unlink(missing_ok=True)


def write_bytes_atomic(path: Path, data: bytes | Sequence[bytes], durable: bool = True) -> None:
    """write_atomic for bytes in hand (or pieces of them, written in turn), with as few system
    calls as it takes: the temporary file is written through the descriptor that created it
    (user files are written by the thousand)."""
    with atomic_file(path, durable) as handle:
        for piece in [data] if isinstance(data, bytes) else data:
            handle.write(piece)


@contextmanager
def atomic_file(path: Path, durable: bool = True) -> Iterator[BinaryIO]:
    """A temporary file beside `path`, open for writing through the descriptor that created
    it; fsynced (unless `durable=False`) and renamed into place when the block ends, removed
    if it raises."""
    fd, tmp = temp_file_beside(path)
    try:
        with os.fdopen(fd, "wb") as handle:
            os.fchmod(handle.fileno(), 0o644)  # mkstemp makes 0600; outputs are read by others too
            yield handle
            if durable:
                handle.flush()
                os.fsync(handle.fileno())
        rename_into_place(tmp, path, durable)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def temp_file_beside(path: Path) -> tuple[int, Path]:
    """A new temporary file in path's folder (made if missing), named as
    resume.remove_stale_temp_files finds leftovers: `.<name>.<random>.tmp`."""
    try:
        fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except FileNotFoundError:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    return fd, Path(name)


def rename_into_place(tmp: Path, path: Path, durable: bool) -> None:
    os.replace(tmp, path)
    if durable:
        fsync_dir(path.parent)


def fsync_dir(folder: Path) -> None:
    dir_fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(dir_fd)  # the rename itself survives a crash
    finally:
        os.close(dir_fd)


def write_json_atomic(path: Path, obj: Any, indent: bool = True, durable: bool = True) -> None:
    # Serialized first: an object that cannot be written never touches the old file.
    write_bytes_atomic(path, orjson.dumps(obj, option=orjson.OPT_INDENT_2 if indent else 0),
                       durable)


class SyncBatch:
    """Durability for many small files at the cost of one sync per batch, not two per file.

    A renamed file survives a crash of the process at once (it is in the page cache); it
    survives a crash of the machine once its batch is synced: at most `seconds` later, or after
    `count` files, and always when the batch is closed. A file lost to a machine crash before
    that is a user the resume check finds missing or damaged, and generates again.
    """

    def __init__(self, folder: Path, seconds: float = 2.0, count: int = 256) -> None:
        self.folder, self.seconds, self.count = folder, seconds, count
        self.pending = 0
        self.last = time.monotonic()

    def written(self) -> None:
        self.pending += 1
        if self.pending >= self.count or time.monotonic() - self.last >= self.seconds:
            self.sync()

    def sync(self) -> None:
        if self.pending:
            sync_filesystem(self.folder)
        self.pending, self.last = 0, time.monotonic()


def sync_filesystem(folder: Path) -> None:
    """syncfs(2) on the folder's filesystem (file data and renames alike); os.sync() where the
    C library has no syncfs."""
    import ctypes

    syncfs = getattr(ctypes.CDLL(None, use_errno=True), "syncfs", None)
    if syncfs is None:
        os.sync()
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        if syncfs(fd) != 0:
            raise OSError(ctypes.get_errno(), f"syncfs failed on {folder}")
    finally:
        os.close(fd)


@contextmanager
def json_array_atomic(path: Path, indent: bool = True, durable: bool = True,
                      ) -> Iterator[Callable[[Any], None]]:
    """Write a JSON array one element at a time, laid out as write_json_atomic lays it out
    (indented by two; `indent=False`: as orjson.dumps writes it, compact), so a large file is
    never one object or one string in memory. Atomic like write_atomic: the file appears whole
    when the block ends, and not at all if it raises."""
    first, between, last = (b"[\n  ", b",\n  ", b"\n]") if indent else (b"[", b",", b"]")
    with atomic_file(path, durable) as handle:
        count = 0

        def put(element: Any) -> None:
            nonlocal count
            if indent:  # a raw newline in orjson's output is layout only (strings escape theirs)
                text = orjson.dumps(element, option=orjson.OPT_INDENT_2).replace(b"\n", b"\n  ")
            else:
                text = orjson.dumps(element)
            handle.write((between if count else first) + text)
            count += 1

        yield put
        handle.write(last if count else b"[]")


def write_user_file(run_dir: Path, user: UserFile, batch: SyncBatch | None = None) -> Path:
    """Write users/<user.file> atomically; disk full or a read-only folder raise RunStopped.

    With a SyncBatch the file is made durable with its batch rather than on its own.
    """
    path = run_dir / USERS_DIR / user.file
    try:
        write_json_atomic(path, user.to_json(), durable=batch is None)
        if batch is not None:
            batch.written()
    except OSError as err:
        stopped = stopped_by_os_error(err, run_dir, path)
        if stopped is None:
            raise
        raise stopped from err
    return path


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
