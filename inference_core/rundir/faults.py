"""Faults a cluster produces, as one line each: what failed, what is kept, how to go on.

A full disk, a read-only or vanished run folder and a dead vLLM engine all stop a run that can be
resumed: the finished users are on disk (written atomically as each finished) and the same
command generates the rest. They become RunStopped, which the CLI turns into EXIT_STOPPED.
"""
from __future__ import annotations

import errno
import logging
import os
import sys
import tempfile
from pathlib import Path
from typing import Sequence

from inference_core.rundir.layout import IDENTITY_FILE, USERS_DIR, count_finished_users

log = logging.getLogger(__name__)

# EX_TEMPFAIL from sysexits.h: "try again later", which is what a resumable stop is.
EXIT_STOPPED = 75
FULL = {errno.ENOSPC, errno.EDQUOT}
NOT_WRITABLE = {errno.EROFS, errno.EACCES, errno.EPERM}
VANISHED = {errno.ENOENT, errno.ESTALE, errno.ENOTDIR}
ENGINE_FAILURES = {"EngineDeadError", "EngineGenerateError"}
TIMEOUT_ENV = "VLLM_EXECUTE_MODEL_TIMEOUT_SECONDS"


class RunStopped(RuntimeError):
    """The run stopped on a fault it can be resumed from; the message says all of it."""


def run_dir_of(path: str | os.PathLike[str] | None) -> Path | None:
    """The run folder a path lies in: the nearest folder above it that holds run.json."""
    if not path:
        return None
    for folder in Path(os.fspath(path)).absolute().parents:
        if (folder / IDENTITY_FILE).is_file():
            return folder
    return None


def kept_line(run_dir: Path | None) -> str:
    if run_dir is None:
        return "finished users are kept on disk"
    try:
        count = count_finished_users(run_dir)
    except OSError:  # the folder itself is gone or unreadable
        return f"nothing more could be read in {run_dir}"
    return f"{count} finished users are kept in {run_dir / USERS_DIR}"


def stopped_by_os_error(err: OSError, run_dir: Path | None = None,
                        path: Path | None = None) -> RunStopped | None:
    """RunStopped for disk full, a read-only or vanished run folder; None for other OSErrors.

    A missing or forbidden file outside the run folder (a dataset, a checkpoint) is not a run
    fault: those stay what they are.
    """
    path = err.filename or path or run_dir  # a failed write() on an open file names nothing
    run_dir = run_dir or run_dir_of(err.filename)
    inside = run_dir is not None and (
        err.filename is None or _is_under(Path(os.fspath(err.filename)), run_dir))
    reason = os.strerror(err.errno) if err.errno else str(err)
    if err.errno in FULL:
        what, fix = f"disk full writing {path} ({reason})", "free space, then"
    elif err.errno in NOT_WRITABLE and inside:
        what, fix = f"{path} cannot be written ({reason})", "make it writable (or pick another output_dir), then"
    elif err.errno in VANISHED and inside:
        what, fix = (f"{path} vanished ({reason}): the run folder was removed or unmounted",
                     "restore it, then")
    else:
        return None
    return RunStopped(f"{what}; {kept_line(run_dir)}; {fix} run the same command again to resume")


def _is_under(path: Path, folder: Path) -> bool:
    try:
        path.absolute().relative_to(folder.absolute())
        return True
    except ValueError:
        return False


def is_engine_failure(err: BaseException) -> bool:
    """vLLM's dead engine (its per-step RPC timeout ends in EngineDeadError), by class name.

    Names, not imports: this module must not import vLLM, and the classes move between versions.
    """
    names = {cls.__name__ for cls in type(err).__mro__}
    return bool(names & ENGINE_FAILURES) or (
        isinstance(err, TimeoutError) and "execute_model" in str(err))


def stopped_by_engine(err: BaseException, run_dir: Path | None) -> RunStopped:
    first = (str(err).strip().splitlines() or [""])[0][:200]
    timeout = os.environ.get(TIMEOUT_ENV, "300")
    return RunStopped(
        f"the vLLM engine died ({type(err).__name__}: {first}); {kept_line(run_dir)}; items in "
        f"flight are generated again when you run the same command again. On an overloaded host "
        f"raise {TIMEOUT_ENV} (now {timeout} s) or lower engine.max_num_batched_tokens "
        f"(docs/faults.md)")


def as_run_stopped(err: BaseException, run_dir: Path | None = None) -> RunStopped | None:
    """The RunStopped an exception amounts to, or None when it is no run fault (an error raised
    from a full disk, say a page that could not be written, is that fault)."""
    if isinstance(err, RunStopped):
        return err
    if isinstance(err, OSError):
        return stopped_by_os_error(err, run_dir)
    if isinstance(err.__cause__, OSError) and (
            stopped := stopped_by_os_error(err.__cause__, run_dir)) is not None:
        return stopped
    if is_engine_failure(err) or any(is_engine_failure(e) for e in _causes(err)):
        return stopped_by_engine(err, run_dir)
    return None


def _causes(err: BaseException) -> list[BaseException]:
    out, seen = [], {id(err)}
    cause = err.__cause__ or err.__context__
    while cause is not None and id(cause) not in seen:
        out.append(cause)
        seen.add(id(cause))
        cause = cause.__cause__ or cause.__context__
    return out


def check_writable(folder: Path) -> None:
    """Create `folder` if needed and write a probe file in it; raises RunStopped if it can't.

    A real write, not os.access: root passes every permission check, yet not a read-only mount.
    """
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".probe.", suffix=".tmp"):
            pass
    except OSError as err:
        stopped = stopped_by_os_error(err, folder)
        if stopped is None:
            raise
        raise stopped from err


def exit_if_output_dir_unwritable(argv: Sequence[str], config_name: str) -> None:
    """Entry-point check before Hydra: Hydra's file log handler fails in an unwritable
    hydra.run.dir (output_dir) with a 35-line traceback. Compose once, probe the folder, exit 75."""
    if any(a.startswith("-") for a in argv):
        return  # -m, --help, --cfg, -cn ...: multirun folders, help and other configs are Hydra's
    run_dir = _composed_run_dir(argv, config_name)
    if run_dir is None:
        return
    try:
        check_writable(run_dir)
    except RunStopped as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(EXIT_STOPPED)


def _composed_run_dir(argv: Sequence[str], config_name: str) -> Path | None:
    """Where Hydra will log: output_dir for one job, the command's own folder for many."""
    from hydra import compose, initialize_config_dir

    from inference_core.config import CONF_DIR, absolute

    overrides = [a for a in argv if "=" in a and not a.startswith("-")]
    try:
        with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
            cfg = compose(config_name=config_name, overrides=overrides, return_hydra_config=True)
        return Path(absolute(str(cfg.hydra.run.dir)))
    except Exception:  # noqa: BLE001 - a config Hydra refuses is reported by Hydra itself
        return None
