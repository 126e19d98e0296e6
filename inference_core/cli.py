"""What both engines' `python -m ...` entry points share: checks, exit codes, resume hints.

Exit codes: 0 done, 2 bad configuration or input (or the folder is in use by another run),
3 items left without generations, 75 stopped by a fault it resumes from (disk full, read-only or
vanished folder, dead engine), 128+N stopped by signal N (re-run the same command to resume).
"""
from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Callable

from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig

from inference_core.config import ConfigError, absolute, group_choices
from inference_core.data.loader import InputError
from inference_core.run.job import prepare_jobs
from inference_core.run.pipeline import SkippedItemsError, StartEngine, run_jobs
from inference_core.rundir.faults import EXIT_STOPPED, as_run_stopped
from inference_core.rundir.lock import RunLocked
from inference_core.rundir.resume import RunMismatch
from inference_core.run.signals import Interrupted

log = logging.getLogger(__name__)
CHOICE_GROUPS = ("dataset", "ablation", "model", "engine", "sampling", "experiment", "debug")


def check_group_choices(argv: list[str]) -> None:
    """Unknown `dataset=...`/`ablation=...` choices: one line with the choices, exit 2.

    Hydra would also refuse them, but with exit code 1 like any other failure.
    """
    overrides = [a for a in argv if "=" in a and not a.startswith("-")]
    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
    except Exception:  # leave syntax errors to Hydra's own message
        return
    for override in parsed:
        group = override.key_or_group
        if group not in CHOICE_GROUPS or override.is_sweep_override() or override.is_delete():
            continue
        value = override.value()
        choices = group_choices(group)
        if isinstance(value, str) and value not in choices:
            print(f"error: unknown {group} '{value}'; choices: {', '.join(choices)}", file=sys.stderr)
            sys.exit(2)


def exit_code_of(action: Callable[[], object], run_dir: Path | None = None) -> int:
    """Run `action`; every expected failure becomes one log line and an exit code."""
    try:
        action()
    except (ConfigError, InputError, RunMismatch, RunLocked) as err:
        log.error("%s", err)
        return 2
    except SkippedItemsError as err:
        log.error("%s", err)
        return 3
    except Interrupted as err:
        log.error("%s: finished users are kept on disk; run the same command again to resume", err)
        return 128 + err.signum
    except Exception as err:  # disk full, unwritable folder, dead engine: one line, resumable
        if (stopped := as_run_stopped(err, run_dir)) is None:
            raise
        log.error("%s", stopped)
        return EXIT_STOPPED
    return 0


def run_cli(cfg: DictConfig, start_engine: StartEngine, shard: tuple[int, int] | None = None,
            merge: bool = True) -> int:
    """Check the config, run this shard of the job(s), and say where the output went."""
    def action() -> None:
        for output_dir in run_jobs(prepare_jobs(cfg, shard), start_engine, merge):
            print(f"output: {output_dir}")

    return exit_code_of(action, Path(absolute(str(cfg.output_dir))))
