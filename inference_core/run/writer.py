"""Users' files written in a thread of their own, so the engine loop never waits for the disk.

The engine loop hands each finished user over and goes on; the writer writes them in that order
(atomically, made durable in batches: rundir/writers.py SyncBatch). A user is finished once its
file is renamed into place: a kill before that loses only users the resume then generates again.
A write that fails (disk full, a read-only folder) stops the writer; its error reaches the
engine loop at the next hand-over, or when the writer is closed.
"""
from __future__ import annotations

import queue
import threading
import time
from typing import Callable


class UserFileWriter:
    """One thread that runs the writes handed to it, in order."""

    def __init__(self, held: bool = False) -> None:
        """`held`: writes wait for `release()` (the folders are not this run's yet); a writer
        closed without release drops them, so that a run whose engine never started writes
        nothing."""
        self._queue: queue.SimpleQueue[Callable[[], None] | None] = queue.SimpleQueue()
        self._error: BaseException | None = None
        self._closed = False
        self._released = threading.Event()
        self._drop = False  # closed while held: nothing handed over is written
        if not held:
            self._released.set()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="user-file-writer", daemon=True)
        self._thread.start()

    def put(self, write: Callable[[], None]) -> None:
        """Queue one write; raises the error of an earlier one that failed. After close (a
        prompt thread still finishing a user as the run stops) the write is done at once."""
        self.raise_error()
        with self._lock:  # never behind the end marker close() puts
            if not self._closed:
                self._queue.put(write)
                return
        if not self._drop:
            write()

    def release(self) -> None:
        """The folders are claimed: write what is queued, and every write from now on."""
        self._released.set()

    def _run(self) -> None:
        self._released.wait()
        while (write := self._queue.get()) is not None:
            # After a failure nothing more is written; without a release nothing at all.
            if self._error is None and not self._drop:
                try:
                    write()
                except BaseException as err:  # noqa: BLE001 - raised in the engine loop's thread
                    self._error = err

    def close(self) -> float:
        """Wait until every write handed over is done; returns the seconds waited, raises the
        error of a write that failed."""
        start = time.perf_counter()
        with self._lock:
            if not self._closed:
                self._closed = True
                self._queue.put(None)
        if not self._released.is_set():
            self._drop = True
            self._released.set()  # the thread drains the queue, writing nothing
        self._thread.join()
        waited = time.perf_counter() - start
        self.raise_error()
        return waited

    def raise_error(self) -> None:
        if self._error is not None:
            raise self._error
