"""One run per folder: an exclusive lock taken before any work, naming its holder.

Two commands on one folder (a Slurm requeue while the old job still runs) would both generate
everything. The lock is an `fcntl.flock` on run.lock (one per shard: shards share a folder), and
the file says who holds it: host, PID, the process's start time and the command.

flock is not honoured on every shared filesystem (NFS without lockd takes it everywhere at
once), so a taken flock is checked against what the file says as well:
- empty file, or our own host with a dead PID (or a reused one: start time differs): free;
- our own host with that process alive: held;
- another host: held while the holder's heartbeat (the file's mtime, touched every
  HEARTBEAT_SECONDS) is younger than STALE_SECONDS, free (taken over with a warning) after.
"""
from __future__ import annotations

import fcntl
import logging
import os
import socket
import sys
import threading
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator

import orjson

from inference_core.rundir.layout import lock_path

log = logging.getLogger(__name__)

HEARTBEAT_SECONDS = 30.0
STALE_SECONDS = 600.0


class RunLocked(ValueError):
    """Another live run holds the folder (the CLI exits 2 with this one line)."""


@dataclass(frozen=True)
class Holder:
    host: str
    pid: int
    process_started: float  # the holder's create time, so that a reused PID is not mistaken
    started_at: str
    command: str

    @classmethod
    def me(cls) -> Holder:
        import psutil

        return cls(socket.gethostname(), os.getpid(), psutil.Process().create_time(),
                   datetime.now(timezone.utc).isoformat(timespec="seconds"),
                   " ".join(sys.argv)[:500])

    def describe(self) -> str:
        return f"{self.host} pid {self.pid} since {self.started_at} ({self.command})"


def read_holder(fd: int) -> Holder | None:
    os.lseek(fd, 0, os.SEEK_SET)
    data = os.read(fd, 1 << 16)
    if not data.strip():
        return None
    try:
        return Holder(**orjson.loads(data))
    except (orjson.JSONDecodeError, TypeError):
        return None  # a torn or foreign lock file says nothing about a holder


def holder_alive(holder: Holder, heartbeat_age: float, stale_seconds: float) -> bool:
    if holder.host != socket.gethostname():
        return heartbeat_age < stale_seconds
    import psutil

    try:
        return abs(psutil.Process(holder.pid).create_time() - holder.process_started) < 1.0
    except psutil.Error:
        return False


def write_holder(fd: int, holder: Holder | None) -> None:
    os.ftruncate(fd, 0)
    if holder is not None:
        os.pwrite(fd, orjson.dumps(asdict(holder)), 0)
    os.fsync(fd)


@contextmanager
def hold_run_lock(output_dir: Path, shard_index: int = 0, shard_count: int = 1,
                  stale_seconds: float = STALE_SECONDS,
                  heartbeat_seconds: float = HEARTBEAT_SECONDS) -> Iterator[Path]:
    """Hold output_dir's lock (this shard's) for the block; raises RunLocked when it is held."""
    path = lock_path(output_dir, shard_index, shard_count)
    fd = open_lock_file(path)
    try:
        take(fd, path, stale_seconds)
        stop = threading.Event()
        beat = threading.Thread(target=heartbeat, args=(path, stop, heartbeat_seconds),
                                name="run-lock-heartbeat", daemon=True)
        beat.start()
        try:
            yield path
        finally:
            stop.set()
            beat.join()
            write_holder(fd, None)  # the file stays: removing it races with a waiting opener
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def open_lock_file(path: Path) -> int:
    """The lock file's descriptor; a folder that cannot be written is a RunStopped here."""
    from inference_core.rundir.faults import stopped_by_os_error

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        return os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as err:
        stopped = stopped_by_os_error(err, path.parent)
        if stopped is None:
            raise
        raise stopped from err


def take(fd: int, path: Path, stale_seconds: float) -> None:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = read_holder(fd)
        raise RunLocked(f"{path.parent} is in use by "
                        f"{holder.describe() if holder else 'another process'} (lock {path}); "
                        f"wait for that run to end or stop it, then run this again") from None
    holder = read_holder(fd)
    if holder is not None:
        age = time.time() - os.fstat(fd).st_mtime
        if holder.pid != os.getpid() and holder_alive(holder, age, stale_seconds):
            fcntl.flock(fd, fcntl.LOCK_UN)  # flock is not shared here (NFS): trust the file
            raise RunLocked(f"{path.parent} is in use by {holder.describe()}, heartbeat "
                            f"{age:.0f} s ago (lock {path}); wait for that run to end or stop it")
        log.warning("%s: taking over the lock of %s, which is gone", path, holder.describe())
    write_holder(fd, Holder.me())


def heartbeat(path: Path, stop: threading.Event, every: float) -> None:
    """Touch the lock file so that other hosts see the holder is alive."""
    while not stop.wait(every):
        try:
            os.utime(path)
        except OSError as err:  # a vanished folder is reported by the run's own writes
            log.debug("lock heartbeat %s: %s", path, err)
