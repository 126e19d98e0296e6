"""Load a benchmark folder (train.json + test_leaderboard.json) into UserRecords.

The files are large, hand-made and messy: every odd field gets a warning naming the file,
record index and field, and is coerced where its meaning is plain; an item whose meaning is not
plain is skipped (and listed in the summary), never guessed at.
"""
from __future__ import annotations

import gc
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import orjson

from inference_core.data.files import InputError, iter_json_array
from inference_core.data.history import (PackedHistory, Spill, TrainUser, history_order,
                                         holdout_last, merge_histories)
from inference_core.data.problems import Problems
from inference_core.data.records import (Dataset, HistoryItem, Location, SkippedItem, TestItem, Turn,
                                         UserRecord, id_key)


TRAIN_FILE = "train.json"
TEST_FILE = "test_leaderboard.json"


def as_text(value: Any, where: str, problems: Problems) -> str | None:
    """A string field: numbers become their text, anything else non-string is None."""
    if isinstance(value, str):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        problems.number(where, value, "text")
        return str(value)
    if value is not None:
        problems.warn(where, f"expected text, got {type(value).__name__}; ignored")
    return None


def field_text(raw: dict[str, Any], key: str, where: str, problems: Problems) -> str | None:
    """as_text of raw[key], naming the place only when there is something to say about it."""
    value = raw.get(key)
    if value is None or type(value) is str:
        return value
    return as_text(value, f"{where}.{key}", problems)


def plain_turns(value: list[Any]) -> tuple[Turn, ...] | None:
    """The turns when every one is an object with text content and a text source (or none),
    the common case, with nothing to warn about; None otherwise."""
    turns = []
    for t in value:
        if type(t) is not dict:
            return None
        content, source = t.get("content"), t.get("source", "")
        if type(content) is not str or type(source) is not str:
            return None
        turns.append(Turn(source, content))
    return tuple(turns)


def parse_turns(value: Any, where: str, problems: Problems) -> tuple[Turn, ...] | None:
    """A context list; a bare string is one turn. None when it cannot be read."""
    if value is None:
        return ()
    if type(value) is list and (plain := plain_turns(value)) is not None:
        return plain
    if isinstance(value, str):
        problems.warn(where, "context is a string, not a list; used as one turn")
        return (Turn("", value),)
    if not isinstance(value, list):
        problems.warn(where, f"context is a {type(value).__name__}, not a list")
        return None
    turns = []
    for t_i, turn in enumerate(value):
        here = f"{where}[{t_i}]"
        if isinstance(turn, str):
            turns.append(Turn("", turn))
            continue
        if not isinstance(turn, dict):
            problems.warn(here, f"turn is a {type(turn).__name__}; dropped")
            continue
        content = as_text(turn.get("content"), f"{here}.content", problems)
        if content is None:
            problems.warn(f"{here}.content", "missing or null content; turn dropped")
            continue
        turns.append(Turn(as_text(turn.get("source"), f"{here}.source", problems) or "", content))
    return tuple(turns)


def iter_items(record: Any, where: str, problems: Problems) -> Iterator[tuple[int, int, Any, str]]:
    """(collection index, item index, raw item, collection description) of one record."""
    task = record.get("task")
    if not isinstance(task, dict):
        problems.warn(f"{where}.task", "missing or not an object; record has no items")
        return
    collections = task.get("task_behavior_collections")
    if not isinstance(collections, list):
        problems.warn(f"{where}.task.task_behavior_collections", "missing or not a list; no items")
        return
    for c_i, col in enumerate(collections):
        here = f"{where}.task.task_behavior_collections[{c_i}]"
        if not isinstance(col, dict) or not isinstance(col.get("data"), list):
            problems.warn(f"{here}.data", "missing or not a list; collection skipped")
            continue
        desc = as_text(col.get("type_desc"), f"{here}.type_desc", problems) or ""
        for d_i, item in enumerate(col["data"]):
            yield c_i, d_i, item, desc


def user_hash_of(record: Any, where: str, problems: Problems) -> str | None:
    """The record's id as text (the run's key for the user), or None when it has none.

    A number is accepted as an id (with a warning); the outputs write it back as the number
    (UserRecord.id_value), only the key is its text.
    """
    if not isinstance(record, dict):
        problems.warn(where, f"record is a {type(record).__name__}, not an object; skipped")
        return None
    value = record.get("user_hash")
    key = id_key(value)
    if key is None:
        problems.warn(f"{where}.user_hash", "missing or not a string; record skipped")
    elif not isinstance(value, str):
        problems.number(f"{where}.user_hash", value, "id")
    return key


def load_history(records: Iterable[Any], file_name: str, problems: Problems,
                 firsts: dict[str, TrainUser] | None = None, spill: Spill | None = None,
                 ) -> dict[str, PackedHistory]:
    """Every train item per user_hash, oldest first (items without a timestamp count as oldest);
    each keeps its file position in `order` for formats that show history in file order.

    Records are read one at a time and each record's items packed at once, so the parsed
    file never exists whole. `firsts`, when given, gets each user's first record (holdout).
    """
    parts: dict[str, list[PackedHistory]] = {}
    counts: dict[str, int] = {}
    for r_i, record in enumerate(records):
        where = f"{file_name}[{r_i}]"
        user_hash = user_hash_of(record, where, problems)
        if user_hash is None:
            continue
        if firsts is not None and user_hash not in firsts:
            task = record.get("task")
            firsts[user_hash] = TrainUser(record["user_hash"], record.get("user"),
                                          task.get("description") if isinstance(task, dict) else None)
        items: list[HistoryItem] = []
        start = counts.get(user_hash, 0)
        for c_i, d_i, raw, _ in iter_items(record, where, problems):
            item = parse_history_item(raw, f"{where}...[{c_i}].data[{d_i}]", problems,
                                      start + len(items))
            if item is not None:
                items.append(item)
        counts[user_hash] = start + len(items)
        parts.setdefault(user_hash, []).append(PackedHistory(sorted(items, key=history_order),
                                                             spill))
    return {user_hash: merge_histories(p, spill) for user_hash, p in parts.items()}


def parse_history_item(raw: Any, where: str, problems: Problems, order: int = 0,
                       ) -> HistoryItem | None:
    if not isinstance(raw, dict):
        problems.warn(where, f"item is a {type(raw).__name__}, not an object; skipped")
        return None
    text = field_text(raw, "continuation", where, problems)
    if not text:
        return None  # a past item with nothing the user said teaches nothing
    context = parse_turns(raw.get("context"), f"{where}.context", problems) or ()
    prefix = field_text(raw, "continuation_prefix", where, problems)
    stamp = field_text(raw, "timestamp", where, problems)
    return HistoryItem(context, prefix or "", text, stamp, order)


def parse_test_item(raw: Any, loc: Location, desc: str, where: str, problems: Problems,
                    references: dict[str, str]) -> TestItem | str:
    """A TestItem, or the reason it cannot be generated."""
    if not isinstance(raw, dict):
        return f"item is a {type(raw).__name__}, not an object"
    context = parse_turns(raw.get("context"), f"{where}.context", problems)
    if context is None:
        return "context is neither a list nor text"
    prefix = as_text(raw.get("continuation_prefix"), f"{where}.continuation_prefix", problems)
    reference = as_text(raw.get("continuation"), f"{where}.continuation", problems)
    if reference is None:
        reference = references.get(loc.key())
    return TestItem(loc, context, prefix or "", reference, desc)


def as_object(value: Any, where: str, problems: Problems) -> dict[str, Any]:
    if value is None or isinstance(value, dict):
        return value or {}
    problems.warn(where, f"expected an object, got {type(value).__name__}; ignored")
    return {}


def load_references(path: Path) -> dict[str, str]:
    """Optional references.json beside the test file: {"record/collection/item": text}."""
    if not path.is_file():
        return {}
    data = orjson.loads(path.read_bytes())
    if not isinstance(data, dict):
        raise InputError(f"{path}: expected an object keyed by 'record/collection/item'")
    return {str(k): v for k, v in data.items() if isinstance(v, str)}


def load_dataset(name: str, folder: str | Path, references_file: str | None = None,
                 max_users: int | None = None, holdout: str | None = None) -> Dataset:
    """Read both files and merge them into one UserRecord per test user, in test-file order.

    holdout="last" ignores the test file: each user's newest train item becomes the test item.
    """
    with cyclic_gc_paused():
        return read_dataset(name, Path(folder), references_file, max_users, holdout)


@contextmanager
def cyclic_gc_paused() -> Iterator[None]:
    """Loading makes millions of objects that all stay alive and hold no cycles: the cyclic
    collector would traverse the growing heap again and again for nothing (two thirds of the
    load at 100k items). Reference counting still frees whatever is dropped."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def read_dataset(name: str, folder: Path, references_file: str | None, max_users: int | None,
                 holdout: str | None) -> Dataset:
    problems = Problems()
    if holdout not in (None, "last"):
        raise InputError(f"dataset.holdout={holdout!r}: only null or 'last' are known")
    firsts: dict[str, TrainUser] | None = {} if holdout == "last" else None
    spill = Spill()  # histories past a budget wait on disk for their prompts
    history = load_history(iter_json_array(folder / TRAIN_FILE), TRAIN_FILE, problems, firsts,
                           spill)
    test_path = folder / TEST_FILE
    derived: list[Any] | None = None
    if firsts is not None:
        derived = holdout_last(firsts, history, spill)
        raw_test: Iterable[Any] = derived
        references: dict[str, str] = {}
    else:
        raw_test = iter_json_array(test_path)
        references = load_references(folder / references_file) if references_file else {}
    users: dict[str, dict[str, Any]] = {}
    skipped: list[SkippedItem] = []
    for r_i, record in enumerate(raw_test):
        where = f"{test_path.name}[{r_i}]"
        user_hash = user_hash_of(record, where, problems)
        if user_hash is None:
            skipped.append(SkippedItem(Location(r_i, -1, -1), None, "record has no usable user_hash",
                                       bad_input=True))
            continue
        raw_id = record["user_hash"]  # what the outputs write: a number stays a number
        if user_hash not in users:
            if max_users is not None and len(users) >= max_users:
                continue
            # Only what the user's record needs later: the raw items go as they are parsed.
            task = record.get("task")
            users[user_hash] = {"user": record.get("user"), "where": where, "items": [],
                                "id": raw_id, "description":
                                task.get("description") if isinstance(task, dict) else None}
        for c_i, d_i, raw, desc in iter_items(record, where, problems):
            loc = Location(r_i, c_i, d_i)
            here = f"{where}.task.task_behavior_collections[{c_i}].data[{d_i}]"
            item = parse_test_item(raw, loc, desc, here, problems, references)
            if isinstance(item, str):
                problems.warn(here, item + "; item skipped")
                skipped.append(SkippedItem(loc, users[user_hash]["id"], item, bad_input=True))
            else:
                users[user_hash]["items"].append(item)
    problems.log_totals()
    records = tuple(build_user(h, u, history.get(h, ()), problems) for h, u in users.items())
    return Dataset(name, str(test_path), str(folder / TRAIN_FILE), records, tuple(skipped),
                   derived)


def build_user(user_hash: str, merged: dict[str, Any], history: Sequence[HistoryItem],
               problems: Problems) -> UserRecord:
    where = merged["where"]
    user = as_object(merged["user"], f"{where}.user", problems)
    return UserRecord(
        user_hash=user_hash,
        profile=as_object(user.get("profile"), f"{where}.user.profile", problems),
        personality=as_object(user.get("personality"), f"{where}.user.personality", problems),
        description=as_text(merged["description"], f"{where}.task.description", problems) or "",
        history=history,
        items=tuple(merged["items"]),
        id_value=merged["id"],
    )
