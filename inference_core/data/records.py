"""Frozen records passed between the pipeline's stages."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


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
    """Everything known about one test user, merged over all their test records."""

    user_hash: str
    profile: dict[str, Any]
    personality: dict[str, Any]
    description: str
    history: tuple[HistoryItem, ...]
    items: tuple[TestItem, ...]

    @property
    def name(self) -> str | None:
        name = self.profile.get("name")
        return str(name) if name not in (None, "") else None


@dataclass(frozen=True)
class SkippedItem:
    """A test item that was not generated, and why (listed in the summary)."""

    location: Location | None
    user_hash: str | None
    reason: str

    def as_dict(self) -> dict[str, Any]:
        loc = self.location.as_dict() if self.location else None
        return {"location": loc, "user_hash": self.user_hash, "reason": self.reason}


@dataclass(frozen=True)
class Dataset:
    """A loaded benchmark: the users to generate for and the raw test records to fill."""

    name: str
    test_path: str
    train_path: str
    users: tuple[UserRecord, ...]
    raw_test: list[Any] = field(repr=False)
    skipped: tuple[SkippedItem, ...] = ()
