"""The argparse side of the exit-code contract (docs/exit-codes.md) for the non-Hydra commands.

0 done, 2 bad arguments or input (one line on stderr), 3 finished with skipped items,
128+N stopped by signal N (Python's own behaviour for SIGINT/SIGTERM).
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import NoReturn, Sequence

EXIT_DONE, EXIT_BAD_INPUT, EXIT_SKIPPED = 0, 2, 3


class CommandParser(argparse.ArgumentParser):
    """`--help` starts with what the command does; a usage error is one line, exit code 2."""

    def __init__(self, prog: str | None = None, summary: str | None = None, **kwargs: object
                 ) -> None:
        super().__init__(prog=prog, **kwargs)
        # Subcommand parsers (add_subparsers) are built with argparse's keywords only.
        self.summary = summary or kwargs.get("help") or ""

    def format_help(self) -> str:
        first = f"{self.prog}: {self.summary}\n\n" if self.summary else ""
        return first + super().format_help()

    def error(self, message: str) -> NoReturn:
        # argparse prints the whole usage block first; one line says what to fix.
        self.exit(EXIT_BAD_INPUT, f"{self.prog}: error: {message} (--help lists the arguments)\n")

    def require_folders(self, paths: Sequence[Path], what: str = "folder") -> None:
        missing = [str(p) for p in paths if not Path(p).is_dir()]
        if missing:
            self.error(f"not a {what}: {', '.join(missing)}")


def skipped_code(failed: int, run_dirs: Sequence[Path]) -> int:
    """for_each_run_dir's 1: some folders were not runs. The rest done: 3; none was a run: 2."""
    from inference_core.rundir.writers import SUMMARY_FILE

    if not failed:
        return EXIT_DONE
    return EXIT_SKIPPED if any((Path(d) / SUMMARY_FILE).is_file() for d in run_dirs) \
        else EXIT_BAD_INPUT

