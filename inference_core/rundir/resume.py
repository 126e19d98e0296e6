"""Resume: which users are already finished on disk, and whether the folder belongs to this run."""
from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path
from typing import Any

import orjson

from inference_core.data.records import Location
from inference_core.rundir.layout import (IDENTITY_FILE, LIKELIHOOD_KEY,  # noqa: F401
                                          RUN_OUTPUTS, SUMMARY_FILE, DamagedUserFile, UserFile,
                                          read_user_file, user_file_path)
from inference_core.rundir.writers import read_json, write_json_atomic

log = logging.getLogger(__name__)


class RunMismatch(ValueError):
    """The output folder holds another run's results."""


def check_output_dir(output_dir: Path, identity: dict[str, Any], overwrite: bool) -> None:
    """Refuse another run's folder (unless overwrite=true) before anything is built for it."""
    path = output_dir / IDENTITY_FILE
    if overwrite or not path.is_file():
        return
    try:
        previous = read_json(path)
    except ValueError as err:  # written atomically, so only a hand edit or a bad disk
        log.warning("%s is damaged (%s); this run's identity will be written over it", path, err)
        return
    # A key the earlier run did not record (written by an older version) cannot differ.
    changed = sorted(k for k in previous.keys() | identity.keys()
                     if k in previous and as_json(identity).get(k) != previous[k])
    if changed:
        raise RunMismatch(
            f"{output_dir} holds a run with other settings ({', '.join(changed)}); "
            f"use another output_dir, or overwrite=true to start afresh")


def claim_output_dir(output_dir: Path, identity: dict[str, Any], overwrite: bool) -> None:
    """Make output_dir this run's: refuse another run's folder unless overwrite=true."""
    check_output_dir(output_dir, identity, overwrite)
    if overwrite:
        for name in RUN_OUTPUTS:
            target = output_dir / name
            if target.is_dir():
                shutil.rmtree(target)
            elif target.exists():
                target.unlink()
    else:
        remove_stale_temp_files(output_dir)
    write_json_atomic(output_dir / IDENTITY_FILE, as_json(identity))


def as_json(identity: dict[str, Any]) -> dict[str, Any]:
    """The identity as it reads back from run.json (tuples become lists)."""
    return orjson.loads(orjson.dumps(identity))


def looks_finished(output_dir: Path, identity: dict[str, Any], shard_count: int,
                   overwrite: bool) -> bool:
    """This very run's folder with its merged summary, every item written or skipped for good:
    most likely nothing to generate, so no engine is started for it (the resume check after
    loading decides)."""
    if overwrite:
        return False
    try:
        summary = read_json(output_dir / SUMMARY_FILE)
        previous = read_json(output_dir / IDENTITY_FILE)
    except (OSError, ValueError):
        return False
    return (previous == as_json(identity) and isinstance(summary, dict)
            and summary.get("num_shards") == shard_count
            and skipped_for_good(output_dir, summary.get("skipped_items") or []))


def skipped_for_good(output_dir: Path, skipped: list[Any]) -> bool:
    """Whether a rerun skips each of these again, as the resume check does: what the input lacks
    (`bad_input`, or a record without a usable user) and prompts that cannot fit, which their
    user's file lists. Anything else (blank samples, an endpoint's error) is asked again."""
    unfit: dict[str, set[str] | None] = {}  # per user: the keys its file lists; None: no file
    for skip in skipped:
        if not isinstance(skip, dict):
            return False
        if skip.get("bad_input") or skip.get("user_hash") is None:
            continue
        user, where = str(skip["user_hash"]), skip.get("location")
        if user not in unfit:
            unfit[user] = listed_unfit(output_dir, user)
        listed = unfit[user]
        if not isinstance(where, dict) or listed is None or Location(**where).key() not in listed:
            return False
    return True


def listed_unfit(output_dir: Path, user_hash: str) -> set[str] | None:
    """The keys of the items the user's file records as impossible to build; None without a
    readable file."""
    try:
        user = read_user_file(user_file_path(output_dir, user_hash))
    except DamagedUserFile:
        return None
    return unfit_keys(user)


def unfit_keys(user: UserFile) -> set[str]:
    return {Location(**s["location"]).key() for s in user.extra.get("skipped_items", [])
            if isinstance(s, dict) and isinstance(s.get("location"), dict)}


def remove_stale_temp_files(output_dir: Path, age_seconds: float = 600) -> None:
    """A killed run's unfinished writes. Young ones may belong to a shard writing right now."""
    now = time.time()
    for stale in output_dir.glob("**/.*.tmp"):
        try:
            if now - stale.stat().st_mtime > age_seconds:
                stale.unlink()
        except FileNotFoundError:
            pass


def is_finished(path: Path, user_hash: str, expected: set[str], num_samples: int,
                scored: bool = False) -> bool:
    """A user file counts only if it is whole: this user, every expected item, n real samples
    (none in a likelihood run) and, where the run scores, each item's likelihood figures."""
    try:
        user = read_user_file(path)
    except DamagedUserFile as err:
        log.warning("%s", err)
        return False
    # Items that cannot be built at all are recorded as skipped: the user is done without them.
    unfit = unfit_keys(user)
    return (user.key == user_hash  # the id's text: an int id and an older file's "123" agree
            and {i.location.key() for i in user.items} | unfit == expected
            and all(len(i.generated_samples) == num_samples
                    and all(t.strip() for t in i.generated_samples)
                    and (not scored or isinstance(i.extra.get(LIKELIHOOD_KEY), dict))
                    for i in user.items))


def finished_users(output_dir: Path, expected: dict[str, set[str]], num_samples: int,
                   scored: bool = False) -> set[str]:
    """Users whose file is complete and valid; the others are generated (again)."""
    done = set()
    for user_hash, keys in expected.items():
        path = user_file_path(output_dir, user_hash)
        if path.is_file():
            if is_finished(path, user_hash, keys, num_samples, scored):
                done.add(user_hash)
            else:
                log.warning("%s is incomplete or invalid; generating that user again", path)
    return done
