"""Frozen records passed between the pipeline's stages."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence, Union

# A user's id as the input JSON holds it: text, or a number the loader accepted as an id.
UserId = Union[str, int, float]


def id_key(value: Any) -> str | None:
    """The text a usable id (text, or a number; never a bool) is keyed by: a string as it is,
    a number as its text; None for anything else."""
    if isinstance(value, str):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    return None


@dataclass(frozen=True, slots=True)
class Location:
    """Where a test item sits in test_leaderboard.json: record, collection and item indices."""

    record: int
    collection: int
    item: int

    def key(self) -> str:
        return f"{self.record}/{self.collection}/{self.item}"

    def as_dict(self) -> dict[str, int]:
        return {"record": self.record, "collection": self.collection, "item": self.item}


@dataclass(frozen=True, slots=True)
class Turn:
    """One earlier turn of a dialogue."""

    source: str
    content: str


@dataclass(frozen=True, slots=True)
class HistoryItem:
    """One of the user's own past items from train.json (what they said or wrote)."""

    context: tuple[Turn, ...]
    prefix: str
    text: str
    timestamp: str | None
    # Position in train.json (over all of the user's records): the order training read them in.
    order: int = 0


@dataclass(frozen=True, slots=True)
class TestItem:
    """One item to generate for: its cue (prefix), its context and, when known, the reference."""

    __test__ = False  # not a pytest class, despite the name

    location: Location
    context: tuple[Turn, ...]
    prefix: str
    reference: str | None
    collection_desc: str


@dataclass(frozen=True)
class UserRecord:
    """Everything known about one test user, merged over all their test records.

    `user_hash` is the id as text: the key the run matches, names files, resumes and shards by.
    `id_value` is the id as the input JSON wrote it (a number stays a number): what every output
    file writes for this user. None (the default) means the text itself.
    """

    user_hash: str
    profile: dict[str, Any]
    personality: dict[str, Any]
    description: str
    history: Sequence[HistoryItem]  # oldest first; the loader's is a data.history.PackedHistory
    items: tuple[TestItem, ...]
    id_value: UserId | None = None

    def __post_init__(self) -> None:
        if self.id_value is None:
            object.__setattr__(self, "id_value", self.user_hash)

    @property
    def name(self) -> str | None:
        name = self.profile.get("name")
        return str(name) if name not in (None, "") else None


@dataclass(frozen=True)
class SkippedItem:
    """A test item that was not generated, and why (listed in the summary).

    `user_hash` is the id as the input wrote it (UserRecord.id_value), None for a record without
    a usable one."""

    location: Location | None
    user_hash: UserId | None
    reason: str
    # The input itself holds no usable item here (the loader's skips): every rerun skips it
    # again, so a finished folder with only such skips needs no engine (rundir/resume.py).
    bad_input: bool = False

    def as_dict(self) -> dict[str, Any]:
        loc = self.location.as_dict() if self.location else None
        out = {"location": loc, "user_hash": self.user_hash, "reason": self.reason}
        return {**out, "bad_input": True} if self.bad_input else out


@dataclass(frozen=True)
class Dataset:
    """A loaded benchmark: the users to generate for (the merge reads the test file again to
    fill it, so its raw records are not kept here)."""

    name: str
    test_path: str
    train_path: str
    users: tuple[UserRecord, ...]
    skipped: tuple[SkippedItem, ...] = ()
    # holdout=last: the test records made from train.json, written as the run's own test file.
    derived_test: list[Any] | None = field(default=None, repr=False)
