"""A user's train history, kept packed until their prompts are built; holdout=last's test items.

Parsed, the history of the overhead benchmark's 100k Chameleons-like test items (600k past
items with their dialogue turns) held 1.2 GB of Python objects; packed as one JSON blob per user
it is 0.33 GB, and each blob is dropped once its user's prompts are built. Past the first
SPILL_AFTER_BYTES the blobs go to an unnamed temporary file (Spill) and are read back when the
user's prompts are built: DMSC-like 100k users with 300 reviews each are 6 GB of history.
"""
from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from typing import Any, Iterator, Sequence, overload

import orjson

SPILL_AFTER_BYTES = 64 << 20  # packed history held in memory; the rest is written to Spill


class Spill:
    """Packed histories past a memory budget, appended to an unnamed temporary file (in TMPDIR)
    that goes away with the last history pointing into it, or with the process."""

    def __init__(self, budget: int = SPILL_AFTER_BYTES) -> None:
        self.budget = budget
        self.held = 0
        self.file: Any = None
        self.end = 0
        self.unflushed = False

    def keep(self, blob: bytes) -> bytes | SpilledBlob:
        """The blob itself while the budget lasts; after that, where it was written."""
        if self.held + len(blob) <= self.budget:
            self.held += len(blob)
            return blob
        if self.file is None:
            self.file = tempfile.TemporaryFile(prefix="histories-")
        self.file.write(blob)
        self.unflushed = True
        spilled = SpilledBlob(self, self.end, len(blob))
        self.end += len(blob)
        return spilled

    def read(self, offset: int, length: int) -> bytes:
        if self.unflushed:  # written while loading; read while building, in another thread
            self.file.flush()
            self.unflushed = False
        return os.pread(self.file.fileno(), length, offset)


class SpilledBlob:
    __slots__ = ("spill", "offset", "length")

    def __init__(self, spill: Spill, offset: int, length: int) -> None:
        self.spill, self.offset, self.length = spill, offset, length

    def read(self) -> bytes:
        return self.spill.read(self.offset, self.length)

from inference_core.data.records import HistoryItem, Turn


def history_order(h: HistoryItem) -> tuple[bool, str, int]:
    """Oldest first; items without a timestamp count as oldest; file order breaks ties."""
    return h.timestamp is not None, h.timestamp or "", h.order


class PackedHistory(Sequence[HistoryItem]):
    """HistoryItems, oldest first, stored as bytes and unpacked on each read (a prompt builder
    reads a user's history once or twice)."""

    __slots__ = ("blob", "size")

    def __init__(self, items: Sequence[HistoryItem], spill: Spill | None = None) -> None:
        packed = orjson.dumps(
            [[[[t.source, t.content] for t in h.context], h.prefix, h.text, h.timestamp, h.order]
             for h in items])
        # Copied: orjson's bytes keep the whole buffer it grew while writing (16.3 KB held for
        # an 8.3 KB history, measured with tracemalloc); the copy holds only the JSON.
        blob = bytes(memoryview(packed))
        self.blob: bytes | SpilledBlob | None = spill.keep(blob) if spill is not None else blob
        self.size = len(items)

    @classmethod
    def from_blob(cls, blob: bytes | None, size: int) -> PackedHistory:
        history = cls.__new__(cls)
        history.blob, history.size = blob, size
        return history

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickled (to a prompt worker) with its JSON, read back where it was spilled."""
        return PackedHistory.from_blob, (self.packed(), self.size)

    def packed(self) -> bytes | None:
        """The JSON of the items (None once released)."""
        return self.blob.read() if isinstance(self.blob, SpilledBlob) else self.blob

    def release(self) -> None:
        """Drop the items: the run calls this once the user's prompts are built, so a long run
        does not hold every history to its end. Reading them afterwards is an error, never a
        silently empty history."""
        self.blob = None

    def unpack(self) -> tuple[HistoryItem, ...]:
        if self.blob is None:
            raise RuntimeError("this history was released once its user's prompts were built")
        return tuple(HistoryItem(tuple(Turn(s, c) for s, c in turns), prefix, text, stamp, order)
                     for turns, prefix, text, stamp, order in orjson.loads(self.packed()))

    def __len__(self) -> int:
        return self.size

    def __iter__(self) -> Iterator[HistoryItem]:
        return iter(self.unpack())

    @overload
    def __getitem__(self, index: int) -> HistoryItem: ...
    @overload
    def __getitem__(self, index: slice) -> tuple[HistoryItem, ...]: ...

    def __getitem__(self, index: Any) -> Any:
        return self.unpack()[index]

    def __eq__(self, other: object) -> bool:
        if isinstance(other, PackedHistory):
            return self.packed() == other.packed()
        return isinstance(other, Sequence) and tuple(self) == tuple(other)

    def __hash__(self) -> int:
        return hash(self.packed())

    def __repr__(self) -> str:
        return f"PackedHistory({self.size} items)"


def merge_histories(parts: Sequence[Sequence[HistoryItem]], spill: Spill | None = None,
                    ) -> PackedHistory:
    """One user's history from the packed parts of each of their train records."""
    if len(parts) == 1 and isinstance(parts[0], PackedHistory):
        return parts[0]
    return PackedHistory(sorted((h for part in parts for h in part), key=history_order), spill)


@dataclass(frozen=True)
class TrainUser:
    """What holdout=last needs of a train user's first record, beside their history."""

    id_value: Any
    user: Any
    description: Any


def holdout_last(firsts: dict[str, TrainUser], history: dict[str, PackedHistory],
                 spill: Spill | None = None) -> list[Any]:
    """Each train user's newest item as a test record with its reference, taken out of history.

    Lets any dataset be scored, even one whose test file has no references. Users in train-file
    order, each with what their first train record says about them.
    """
    records = []
    for user_hash, first in firsts.items():
        if not history.get(user_hash):
            continue
        *older, last = history[user_hash].unpack()
        history[user_hash] = PackedHistory(older, spill)  # the reference must not stay in it
        item = {"context": [{"source": t.source, "content": t.content} for t in last.context],
                "continuation_prefix": last.prefix, "continuation": last.text,
                "timestamp": last.timestamp}
        records.append({"user_hash": first.id_value, "user": first.user, "task": {
            "description": first.description,
            "task_behavior_collections": [{"type": "holdout", "type_desc": "", "data": [item]}]}})
    return records
