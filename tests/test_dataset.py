"""Loading messy benchmark files: warn and coerce where the meaning is plain, skip otherwise."""
from __future__ import annotations

import logging

import pytest

from conftest import DATA, dialogue_item, user_record, write_dataset
from inference_core.data.loader import InputError, load_dataset
from inference_core.data.records import Location


def test_sample_datasets_load_with_history_oldest_first():
    for name in ("Chameleons", "DMSC"):
        data = load_dataset(name, DATA / name)
        assert len(data.users) >= 6 and not data.skipped
        assert any(len(u.items) > 1 for u in data.users)
        for user in data.users:
            stamps = [h.timestamp for h in user.history if h.timestamp]
            assert stamps == sorted(stamps)


def test_history_comes_from_train_by_user_hash_and_sorts_by_timestamp(tmp_path):
    train = [user_record("a", "DANTE", [dialogue_item("second", ("R", "q"), timestamp="2002"),
                                        dialogue_item("first", ("R", "q"), timestamp="2001")]),
             user_record("b", "RANDAL", [dialogue_item("not mine", ("D", "q"))])]
    test = [user_record("a", "DANTE", [dialogue_item(None, ("R", "hi"))])]
    data = load_dataset("x", write_dataset(tmp_path, train, test))
    (user,) = data.users
    assert [h.text for h in user.history] == ["first", "second"]


def test_user_in_several_train_records_has_one_history_in_time_then_file_order(tmp_path):
    train = [user_record("a", "DANTE", [dialogue_item("tie one", ("R", "q"), timestamp="2002"),
                                        dialogue_item("undated", ("R", "q"))]),
             user_record("b", "RANDAL", [dialogue_item("not mine", ("D", "q"))]),
             user_record("a", "DANTE", [dialogue_item("oldest", ("R", "q"), timestamp="2001"),
                                        dialogue_item("tie two", ("R", "q"), timestamp="2002")])]
    test = [user_record("a", "DANTE", [dialogue_item(None, ("R", "hi"))])]
    (user,) = load_dataset("x", write_dataset(tmp_path, train, test)).users
    assert [(h.text, h.order) for h in user.history] == [
        ("undated", 1), ("oldest", 2), ("tie one", 0), ("tie two", 3)]
    assert user.history[-1].context[0].content == "q" and len(user.history) == 4


def test_malformed_records_warn_with_file_record_and_field(tmp_path, caplog):
    test = [
        user_record("ok", "A", [dialogue_item(None, ("R", "hello"))]),
        {"user_hash": "no-task", "user": {"profile": {"name": "B"}}},
        "not an object",
        user_record("nulls", "C", [{"context": [{"source": "R", "content": None},
                                                {"source": "R", "content": 42}],
                                    "continuation_prefix": "C: "}]),
        user_record("string-ctx", "D", [{"context": "just a string", "continuation_prefix": 7}]),
        user_record("bad-ctx", "E", [{"context": {"a": 1}}, "item that is text"]),
        user_record(12345, "F", [dialogue_item(None, ("R", "numeric id"))]),
    ]
    with caplog.at_level(logging.WARNING):
        data = load_dataset("x", write_dataset(tmp_path, [], test))
    log = caplog.text
    assert "test_leaderboard.json[1].task: missing" in log
    assert "test_leaderboard.json[2]: record is a str" in log
    assert "test_leaderboard.json[3].task.task_behavior_collections[0].data[0].context[0].content" in log
    assert "number 42 used as text" in log
    users = {u.user_hash: u for u in data.users}
    assert set(users) == {"ok", "no-task", "nulls", "string-ctx", "bad-ctx", "12345"}
    assert [t.content for t in users["nulls"].items[0].context] == ["42"]
    assert users["string-ctx"].items[0].context[0].content == "just a string"
    assert users["string-ctx"].items[0].prefix == "7"
    skipped = {(s.location, s.reason.split(",")[0]) for s in data.skipped}
    assert (Location(5, 0, 0), "context is neither a list nor text") in skipped
    assert (Location(5, 0, 1), "item is a str") in {(l, r.split(",")[0]) for l, r in skipped}
    assert (Location(2, -1, -1), "record has no usable user_hash") in skipped


def test_same_user_in_several_records_is_one_user_with_all_items(tmp_path):
    test = [user_record("dup", "A", [dialogue_item(None, ("R", "one"))]),
            user_record("other", "B", [dialogue_item(None, ("R", "two"))]),
            user_record("dup", "A", [dialogue_item(None, ("R", "three"))])]
    data = load_dataset("x", write_dataset(tmp_path, [], test))
    assert [u.user_hash for u in data.users] == ["dup", "other"]
    assert [i.location for i in data.users[0].items] == [Location(0, 0, 0), Location(2, 0, 0)]


GOOD_RECORD = b'{"user_hash": "a", "task": {"task_behavior_collections": []}}'


@pytest.mark.parametrize("name", ["test_leaderboard.json", "train.json"])
@pytest.mark.parametrize("content,message", [
    (b"{not json", "not valid JSON"),
    (b'{"a": 1}', "expected a JSON array of user records, got dict"),
    (b"", "not valid JSON"),
    (b"[" + GOOD_RECORD + b", {broken", r"not valid JSON after record \[0\]"),
    (b"[" + GOOD_RECORD + b"] trailing", r"not valid JSON after record \[0\]"),
    (b"[" + GOOD_RECORD[:-1] + b'\xff"]', "not valid JSON before the first record")])
def test_unreadable_files_raise_one_error_naming_the_file(tmp_path, name, content, message):
    """Both files are read a record at a time: a break names the file and the last good record."""
    write_dataset(tmp_path, [], [])
    (tmp_path / name).write_bytes(content)
    with pytest.raises(InputError, match=message) as err:
        load_dataset("x", tmp_path)
    assert name in str(err.value)


def test_references_file_fills_missing_references(tmp_path):
    test = [user_record("a", "A", [dialogue_item(None, ("R", "q")), dialogue_item("given", ("R", "q"))])]
    write_dataset(tmp_path, [], test)
    (tmp_path / "references.json").write_text('{"0/0/0": "from file", "0/0/1": "ignored"}')
    (user,) = load_dataset("x", tmp_path, "references.json").users
    assert [i.reference for i in user.items] == ["from file", "given"]


def test_a_packed_history_reads_back_whole_and_refuses_reads_once_released():
    from inference_core.data.history import PackedHistory
    from inference_core.data.records import HistoryItem, Turn

    items = (HistoryItem((Turn("R", "q?"), Turn("", "ü")), "D: ", "line", None, 3),
             HistoryItem((), "", "two", "2001", 0))
    packed = PackedHistory(items)
    assert tuple(packed) == items and packed[1:] == items[1:] and packed == items
    packed.release()  # the run's prompts for this user are built
    assert len(packed) == 2
    with pytest.raises(RuntimeError, match="released"):
        list(packed)


def test_histories_past_the_memory_budget_wait_on_disk_and_travel_whole():
    """Spilled histories read back as they went in, also in a prompt worker (pickled)."""
    import pickle

    from inference_core.data.history import PackedHistory, Spill, SpilledBlob
    from inference_core.data.records import HistoryItem, Turn

    spill = Spill(budget=100)
    users = [tuple(HistoryItem((Turn("R", f"q{u}"),), "D: ", f"line {u}/{i} ü", None, i)
                   for i in range(u + 1)) for u in range(6)]
    packed = [PackedHistory(items, spill) for items in users]
    assert isinstance(packed[0].blob, bytes) and isinstance(packed[-1].blob, SpilledBlob)
    assert [tuple(p) for p in packed] == users
    assert [tuple(pickle.loads(pickle.dumps(p))) for p in packed] == users
    packed[-1].release()
    assert pickle.loads(pickle.dumps(packed[-1])).blob is None


def test_numbers_that_are_numbers_are_told_once_per_file_and_field(tmp_path, caplog):
    """Epoch timestamps and numeric ids: one line per file and field, with the count."""
    items = [dialogue_item(f"line {i}", ("R", "q")) | {"timestamp": 1_300_000_000 + i}
             for i in range(40)]
    train = [user_record(9, "A", items)]
    test = [user_record(9, "A", [dialogue_item(None, ("R", "q"))]),
            user_record(10, "B", [dialogue_item(None, ("R", "q"))])]
    with caplog.at_level(logging.WARNING):
        (first, _) = load_dataset("x", write_dataset(tmp_path, train, test)).users
    assert [h.timestamp for h in first.history][:2] == ["1300000000", "1300000001"]
    lines = [r.getMessage() for r in caplog.records]
    assert lines == [
        "train.json: 1 number used as id at [*].user_hash (e.g. train.json[0].user_hash: number 9 "
        "used as id)",
        "train.json: 40 numbers used as text at [*]...[*].data[*].timestamp (e.g. "
        "train.json[0]...[0].data[0].timestamp: number 1300000000 used as text)",
        "test_leaderboard.json: 2 numbers used as id at [*].user_hash (e.g. "
        "test_leaderboard.json[0].user_hash: number 9 used as id)"]
