"""The run folder: every file name in one place, and the typed user file.

A run folder holds users/<slug>-<24 hex>.json (one per finished user), shards/<i>-of-<n>.json
(each shard's figures), run.json (the run's identity), the merged test_leaderboard.json and
inference_summary.json, the evaluation's metrics.json, samples.parquet and likelihood.parquet,
report.html, a holdout's holdout_test.json, and the lock files of the runs writing it. Nothing
else in the project spells these names or parses a user file by hand.
"""
from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping

import orjson

from inference_core.data.records import Location, UserId, id_key

log = logging.getLogger(__name__)

USERS_DIR = "users"
SHARDS_DIR = "shards"
IDENTITY_FILE = "run.json"
LEADERBOARD_FILE = "test_leaderboard.json"
SUMMARY_FILE = "inference_summary.json"
METRICS_FILE = "metrics.json"
SAMPLES_FILE = "samples.parquet"
REPORT_FILE = "report.html"
HOLDOUT_FILE = "holdout_test.json"
PROMPTS_FILE = "prompts.jsonl"
HYDRA_DIR = ".hydra"  # the composed config Hydra (or a many-job command) writes
LOCK_FILE = "run.lock"  # one shard's lock is run-<i>-of-<n>.lock (shards share the folder)
# What a run leaves besides .hydra/ (Hydra rewrites that itself): removed by overwrite=true.
ITEM_SCORES_FILE = "item_scores.parquet"  # the leaderboard's per-item cache
LIKELIHOOD_FILE = "likelihood.parquet"  # every item's (and option's) likelihood figures
REPLICAS_DIR = "replicas"  # logs of data-parallel replica processes
RUN_OUTPUTS = (USERS_DIR, SHARDS_DIR, LEADERBOARD_FILE, SUMMARY_FILE, METRICS_FILE,
               SAMPLES_FILE, ITEM_SCORES_FILE, LIKELIHOOD_FILE, REPORT_FILE, HOLDOUT_FILE,
               PROMPTS_FILE, IDENTITY_FILE, REPLICAS_DIR)

SLUG_CHARS = re.compile(r"[^A-Za-z0-9_-]+")
OWN_USER_NAME = re.compile(r"[A-Za-z0-9_-]{1,48}-[0-9a-f]{24}\.json")
SHARD_REPORT_NAME = re.compile(r"(\d+)-of-(\d+)\.json")
# The item keys this module knows, in the order a user file has always had them.
ITEM_KEYS = ("location", "prompt_tokens", "truncated", "generated_samples", "finish_reasons",
             "output_tokens", "reference")
USER_KEYS = ("user_hash", "file", "profile_name", "dataset", "ablation", "model", "items")
SESSION_KEY = "session"  # a user file's extra key: the id of the session that wrote it
LIKELIHOOD_KEY = "likelihood"  # an item's extra key: its likelihood figures (likelihood/figures.py)


def safe_user_filename(user_hash: str) -> str:
    """A file name no id can steer: a short readable slug plus a digest of the whole id.

    The slug keeps only [A-Za-z0-9_-] (no dots, no separators), so nothing escapes users/; the
    digest makes two different ids land in two different files.
    """
    digest = hashlib.sha256(user_hash.encode("utf-8", "surrogatepass")).hexdigest()[:24]
    slug = SLUG_CHARS.sub("_", user_hash).strip("_")[:48]
    return f"{slug}-{digest}.json" if slug else f"user-{digest}.json"


def user_file_path(output_dir: Path, user_hash: str) -> Path:
    return output_dir / USERS_DIR / safe_user_filename(user_hash)


def shard_report_path(output_dir: Path, index: int, count: int) -> Path:
    return output_dir / SHARDS_DIR / f"{index}-of-{count}.json"


def lock_path(output_dir: Path, index: int = 0, count: int = 1) -> Path:
    return output_dir / (LOCK_FILE if count == 1 else f"run-{index}-of-{count}.lock")


def is_own_user_name(name: str) -> bool:
    """Whether `name` is one safe_user_filename could produce (not `x (copy).json`, not `.tmp`)."""
    return OWN_USER_NAME.fullmatch(name) is not None


class DamagedUserFile(ValueError):
    """A user file that cannot be read as one: torn, not JSON, or missing fields."""

    def __init__(self, path: Path, why: str) -> None:
        super().__init__(f"{path}: {why}")
        self.path = path
        self.why = why


@dataclass(frozen=True, slots=True)  # every item of a run is read once after it, for merge to report
class UserItem:
    """One generated item of a user file; `extra` keeps keys other tools add (in their order)."""

    location: Location
    prompt_tokens: int
    truncated: bool
    generated_samples: tuple[str, ...]
    finish_reasons: tuple[str, ...]
    output_tokens: tuple[int, ...]
    reference: str | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "location": self.location.as_dict(),
            "prompt_tokens": self.prompt_tokens,
            "truncated": self.truncated,
            "generated_samples": list(self.generated_samples),
            "finish_reasons": list(self.finish_reasons),
            "output_tokens": list(self.output_tokens),
        }
        if self.reference is not None:  # reference-free datasets have always left it out
            out["reference"] = self.reference
        return out | dict(self.extra)

    @classmethod
    def from_json(cls, doc: Any) -> UserItem:
        """Raises KeyError/TypeError/ValueError on a malformed item (read_user_file names it)."""
        if not isinstance(doc, dict):
            raise TypeError(f"an item is {type(doc).__name__}, not an object")
        loc = doc["location"]
        location = Location(int(loc["record"]), int(loc["collection"]), int(loc["item"]))
        samples = _strings(doc["generated_samples"], "generated_samples")
        return cls(location=location, prompt_tokens=int(doc["prompt_tokens"]),
                   truncated=bool(doc.get("truncated", False)), generated_samples=samples,
                   finish_reasons=tuple(str(r) for r in doc.get("finish_reasons") or ()),
                   output_tokens=tuple(int(t) for t in doc.get("output_tokens") or ()),
                   reference=doc.get("reference"),
                   extra={k: v for k, v in doc.items() if k not in ITEM_KEYS})


def _strings(values: Any, name: str) -> tuple[str, ...]:
    if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
        raise TypeError(f"{name} is not a list of strings")
    return tuple(values)


@dataclass(frozen=True, slots=True)
class UserFile:
    """users/<name>.json: one user's generated items, sorted by location key.

    `user_hash` is the id as the input wrote it (text, or a number); `key` is its text, which
    names the file and is what everything matching users compares (a file from before ids kept
    their type holds the text, and matches the same). `session` is the id of the session that
    wrote the file (None in files from before sessions were recorded).
    """

    user_hash: UserId
    file: str
    profile_name: str | None
    dataset: str | None
    ablation: str | None
    model: str | None
    items: tuple[UserItem, ...]
    extra: Mapping[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"user_hash": self.user_hash, "file": self.file,
                "profile_name": self.profile_name, "dataset": self.dataset,
                "ablation": self.ablation, "model": self.model,
                "items": [i.to_json() for i in self.items]} | dict(self.extra)

    @property
    def key(self) -> str:
        """The id as text: the user's key for file names, resume and matching."""
        return str(self.user_hash)

    @property
    def session(self) -> str | None:
        value = self.extra.get(SESSION_KEY)
        return value if isinstance(value, str) else None

    @classmethod
    def from_json(cls, doc: Any) -> UserFile:
        if not isinstance(doc, dict):
            raise TypeError(f"the file holds {type(doc).__name__}, not an object")
        if id_key(doc["user_hash"]) is None:
            raise TypeError("user_hash is neither a string nor a number")
        if not isinstance(doc["items"], list):
            raise TypeError("items is not a list")
        return cls(user_hash=doc["user_hash"], file=str(doc.get("file", "")),
                   profile_name=doc.get("profile_name"), dataset=doc.get("dataset"),
                   ablation=doc.get("ablation"), model=doc.get("model"),
                   items=tuple(UserItem.from_json(i) for i in doc["items"]),
                   extra={k: v for k, v in doc.items() if k not in USER_KEYS})


def user_file_of(user_hash: UserId, profile_name: str | None, dataset: str | None,
                 ablation: str | None, model: str | None,
                 items: Iterable[UserItem | Mapping[str, Any]],
                 session: str | None = None) -> UserFile:
    """The pipeline's pieces (its UserItems, or item dicts as a user file holds them) as a
    UserFile, items sorted by location key.

    `user_hash` is the id as the input wrote it; the file is named after its text.
    """
    typed = sorted((i if isinstance(i, UserItem) else UserItem.from_json(dict(i)) for i in items),
                   key=lambda i: i.location.key())
    extra = {SESSION_KEY: session} if session is not None else {}
    return UserFile(user_hash, safe_user_filename(str(user_hash)), profile_name, dataset,
                    ablation, model, tuple(typed), extra)


def read_user_file(path: Path) -> UserFile:
    """The typed user file; raises DamagedUserFile (naming the path and why) for anything else."""
    try:
        data = path.read_bytes()
    except OSError as err:
        raise DamagedUserFile(path, f"unreadable ({err.strerror or err})") from err
    try:
        doc = orjson.loads(data)
    except orjson.JSONDecodeError as err:
        raise DamagedUserFile(path, f"not whole JSON ({len(data)} bytes; {err})") from err
    try:
        return UserFile.from_json(doc)
    except KeyError as err:
        raise DamagedUserFile(path, f"field {err} is missing") from err
    except (TypeError, ValueError) as err:
        raise DamagedUserFile(path, str(err)) from err


def user_file_names(output_dir: Path) -> list[Path]:
    """Every *.json under users/, the run's own or not, in name order."""
    folder = output_dir / USERS_DIR
    return sorted(folder.glob("*.json")) if folder.is_dir() else []


@dataclass(frozen=True)
class UserFiles:
    """What users/ holds: the run's readable files, and the paths left out with the reason."""

    users: tuple[UserFile, ...]
    damaged: tuple[DamagedUserFile, ...]
    strays: tuple[Path, ...]


def scan_user_files(output_dir: Path) -> UserFiles:
    """Read users/: own files parsed, damaged ones and files the run did not write set apart.

    A stray file (an editor's copy, a name this run never produces, a file whose `file` field
    names another file) is not this run's and never blocks it; a damaged own file is a user the
    resume generates again.
    """
    users, damaged, strays = [], [], []
    for path in user_file_names(output_dir):
        if not is_own_user_name(path.name):
            strays.append(path)
            continue
        try:
            user = read_user_file(path)
        except DamagedUserFile as err:
            damaged.append(err)
            continue
        if user.file != path.name or safe_user_filename(user.key) != path.name:
            strays.append(path)
            continue
        users.append(user)
    return UserFiles(tuple(users), tuple(damaged), tuple(strays))


def read_user_files(output_dir: Path) -> Iterator[UserFile]:
    """Every readable user file for the evaluators, once per user; damaged ones are logged.

    Laxer than the merge's scan_user_files: a hand-named file (a test's u1.json, an older
    layout) is read too, but the run's own file wins over a copy of the same user.
    """
    paths = user_file_names(output_dir)
    seen: set[str] = set()
    for path in sorted(paths, key=lambda p: (not is_own_user_name(p.name), p.name)):
        try:
            user = read_user_file(path)
        except DamagedUserFile as err:
            log.warning("%s: %s; left out", err.path, err.why)
            continue
        if user.key in seen:
            log.warning("%s repeats user %s of another file; ignored", path, user.key)
            continue
        seen.add(user.key)
        yield user


def log_left_out(found: UserFiles) -> None:
    for stray in found.strays:
        log.warning("%s is not one of this run's user files (name or `file` field); ignored",
                    stray)
    for err in found.damaged:
        log.warning("%s: %s; left out (a resume generates this user again)", err.path, err.why)


def count_finished_users(output_dir: Path) -> int:
    """How many of the run's own user files are on disk (names only: writes are atomic)."""
    return sum(is_own_user_name(p.name) for p in user_file_names(output_dir))
