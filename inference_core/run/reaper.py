"""Engine processes die with the main process, whatever kills it (the OOM killer's SIGKILL too).

vLLM's EngineCore and its workers, a local Ray cluster's processes and a torchrun rank's own
children outlive a main process killed with SIGKILL: nothing in the dead process can clean up.
So a small watchdog process does it from outside. `with engine_reaper():` starts it before the
engine; it learns the main process's descendants every POLL_SECONDS (after the main process is
gone they are reparented and can no longer be found through it) and, once the main process is
gone, sends them SIGTERM and, after GRACE_SECONDS, SIGKILL.

The main process is gone when the watchdog's stdin (a pipe only the main process writes) hits
EOF without the "done" line the context manager sends on a normal exit, or when the watchdog's
parent PID changes (a forked child that inherited the pipe would otherwise keep it open).
Descendants that existed before the watchdog started are not its business (a test session's
shared engine, for one) and are never touched. Each torchrun rank runs its own watchdog.

Run as `python -m inference_core.run.reaper MAIN_PID [POLL_SECONDS GRACE_SECONDS]`.
"""
from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
from contextlib import contextmanager
from typing import Iterator

log = logging.getLogger(__name__)

POLL_SECONDS = 1.0
GRACE_SECONDS = 5.0
DONE = b"done\n"
READY = b"ready\n"


@contextmanager
def engine_reaper(poll_seconds: float = POLL_SECONDS,
                  grace_seconds: float = GRACE_SECONDS) -> Iterator[subprocess.Popen]:
    """Run the block with a watchdog that kills the block's new processes if this one dies."""
    watchdog = subprocess.Popen(
        [sys.executable, "-m", "inference_core.run.reaper", str(os.getpid()), str(poll_seconds),
         str(grace_seconds)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, close_fds=True)
    assert watchdog.stdout is not None
    # Wait until it has noted the processes that exist now: the engine's come after.
    if watchdog.stdout.readline() != READY:
        log.warning("engine reaper %d did not start; engine processes may outlive a kill",
                    watchdog.pid)
    watchdog.stdout.close()
    try:
        yield watchdog
    finally:
        assert watchdog.stdin is not None
        if not watchdog.stdin.closed:  # else reap_now has ended it
            say_done(watchdog, poll_seconds)


def say_done(watchdog: subprocess.Popen, poll_seconds: float) -> None:
    """A normal exit: the engine is closed and the watchdog leaves its processes alone."""
    assert watchdog.stdin is not None
    try:
        watchdog.stdin.write(DONE)
        watchdog.stdin.close()
        watchdog.wait(timeout=max(10.0, 3 * poll_seconds))
    except (OSError, subprocess.TimeoutExpired) as err:
        log.warning("engine reaper %d did not stop (%s); killing it", watchdog.pid, err)
        watchdog.kill()


def reap_now(watchdog: subprocess.Popen, timeout: float = 30.0) -> None:
    """Stop, now, the processes started since the watchdog began: an engine still starting that
    no job needs any more (its start cannot be cancelled from inside)."""
    assert watchdog.stdin is not None
    if watchdog.stdin.closed:
        return
    watchdog.stdin.close()  # EOF without "done": the watchdog reaps as if we had died
    try:
        watchdog.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        log.warning("engine reaper %d did not finish stopping the engine; killing it",
                    watchdog.pid)
        watchdog.kill()


class Watch:
    """The main process's descendants that appeared after the watchdog started."""

    def __init__(self, main_pid: int) -> None:
        import psutil

        self.main = psutil.Process(main_pid)
        self.me = os.getpid()
        self.known: dict[int, psutil.Process] = {}
        self.before = {(p.pid, p.create_time()) for p in self._descendants([self.main])}

    def _descendants(self, roots: list) -> list:
        import psutil

        found = []
        for root in roots:
            try:
                found += root.children(recursive=True)
            except psutil.Error:
                continue  # already gone
        return [p for p in found if p.pid != self.me]

    def refresh(self, roots: list | None = None) -> None:
        import psutil

        for p in self._descendants(roots if roots is not None else [self.main]):
            try:
                if (p.pid, p.create_time()) not in self.before:
                    self.known.setdefault(p.pid, p)
            except psutil.Error:
                continue

    def main_gone(self, main_pid: int) -> bool:
        return os.getppid() != main_pid or not self.main.is_running()

    def reap(self, grace_seconds: float) -> int:
        """SIGTERM every known process still alive, SIGKILL what is left after the grace time."""
        import psutil

        self.refresh(list(self.known.values()))  # workers started in the last poll interval
        alive = [p for p in self.known.values() if running(p)]
        for p in alive:
            try:
                p.send_signal(signal.SIGTERM)
            except psutil.Error:
                pass
        _, left = psutil.wait_procs(alive, timeout=grace_seconds)
        left = [p for p in left if running(p)]  # a zombie is dead, waiting for init to reap it
        for p in left:
            try:
                p.kill()
            except psutil.Error:
                pass
        psutil.wait_procs(left, timeout=grace_seconds)
        return len(alive)


def running(process: object) -> bool:
    import psutil

    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def watch(main_pid: int, poll_seconds: float, grace_seconds: float) -> int:
    # Slurm and Ctrl-C signal the whole process group: the watchdog stays to clean up after.
    for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(s, signal.SIG_IGN)
    state = Watch(main_pid)
    os.write(sys.stdout.fileno(), READY)
    ended = threading.Event()
    done = threading.Event()

    def read_stdin() -> None:
        if sys.stdin.buffer.read() == DONE:  # read() returns at EOF
            done.set()
        ended.set()

    threading.Thread(target=read_stdin, daemon=True).start()
    while True:
        ended.wait(poll_seconds)
        if done.is_set():
            return 0
        if ended.is_set() or state.main_gone(main_pid):
            count = state.reap(grace_seconds)
            if count:
                log.warning("main process %d is gone: stopped %d engine processes it left",
                            main_pid, count)
            return 0
        state.refresh()


def main(argv: list[str]) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s reaper: %(message)s")
    poll = float(argv[1]) if len(argv) > 1 else POLL_SECONDS
    grace = float(argv[2]) if len(argv) > 2 else GRACE_SECONDS
    return watch(int(argv[0]), poll, grace)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
