"""Stop cleanly on SIGTERM/SIGINT (Slurm preemption, Ctrl-C): finished users are already on disk."""
from __future__ import annotations

import signal
from contextlib import contextmanager
from typing import Iterator


class Interrupted(Exception):
    """A stop signal arrived; the run can be resumed by running the same command again."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"stopped by {signal.Signals(signum).name}")
        self.signum = signum


@contextmanager
def stop_on_signals() -> Iterator[None]:
    """Turn SIGTERM and SIGINT into Interrupted, raised between engine steps."""
    def handler(signum: int, frame: object) -> None:
        raise Interrupted(signum)

    previous = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for s, old in previous.items():
            signal.signal(s, old)
