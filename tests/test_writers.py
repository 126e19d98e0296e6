"""Writers: file names no id can steer, atomic JSON, the filled leaderboard."""
from __future__ import annotations

import os

import orjson
import pytest

from inference_core.rundir.writers import (json_array_atomic, safe_user_filename, user_file_path,
                                    write_json_atomic)

HOSTILE_IDS = ["../../etc/passwd", "a/b\\c:d*?", "", "x" * 500, "用户😀", ".", "..", "CON",
               "a b", "a_b", "a-b", "A/B", "a\x00b"]


def test_hostile_ids_stay_inside_users_and_never_share_a_file(tmp_path):
    names = set()
    for user_hash in HOSTILE_IDS:
        path = user_file_path(tmp_path, user_hash)
        assert path.parent == tmp_path / "users"
        name = path.name
        assert "/" not in name and "\\" not in name and not name.startswith(".")
        assert len(name.encode()) < 100
        names.add(name)
    assert len(names) == len(HOSTILE_IDS)


def test_safe_name_is_stable_and_readable():
    assert safe_user_filename("c3f1ab") == safe_user_filename("c3f1ab")
    assert safe_user_filename("c3f1ab").startswith("c3f1ab-")


def test_atomic_write_replaces_whole_file_and_leaves_no_temp(tmp_path):
    path = tmp_path / "sub" / "f.json"
    write_json_atomic(path, {"a": 1})
    write_json_atomic(path, {"b": [1, 2]})
    assert orjson.loads(path.read_bytes()) == {"b": [1, 2]}
    assert os.listdir(path.parent) == ["f.json"]


def test_failed_write_keeps_the_old_file(tmp_path):
    path = tmp_path / "f.json"
    write_json_atomic(path, {"a": 1})
    with pytest.raises(TypeError):
        write_json_atomic(path, {"a": object()})
    assert orjson.loads(path.read_bytes()) == {"a": 1}
    assert os.listdir(tmp_path) == ["f.json"]


@pytest.mark.parametrize("records", [[], [{"user_hash": "u", "a": [1, {"b": "x\ny"}], "e": {}}, "odd", [],
                                      {"n": None, "f": 1.5}]])
def test_a_json_array_written_a_record_at_a_time_is_what_one_dump_writes(tmp_path, records):
    path = tmp_path / "leaderboard.json"
    with json_array_atomic(path) as put:
        for record in records:
            put(record)
    assert path.read_bytes() == orjson.dumps(records, option=orjson.OPT_INDENT_2)
    assert os.listdir(tmp_path) == ["leaderboard.json"]


def test_a_json_array_that_fails_midway_leaves_the_old_file(tmp_path):
    path = tmp_path / "leaderboard.json"
    path.write_bytes(b"[1]")
    with pytest.raises(TypeError), json_array_atomic(path) as put:
        put({"a": 1})
        put({"a": object()})
    assert path.read_bytes() == b"[1]" and os.listdir(tmp_path) == ["leaderboard.json"]


def test_user_files_are_synced_in_batches_not_one_by_one(tmp_path, monkeypatch) -> None:
    from inference_core.rundir import writers

    synced = []
    monkeypatch.setattr(writers, "sync_filesystem", lambda folder: synced.append(folder))
    batch = writers.SyncBatch(tmp_path, seconds=3600, count=3)
    for i in range(7):
        writers.write_json_atomic(tmp_path / f"{i}.json", {"i": i}, durable=False)
        batch.written()
    assert len(synced) == 2  # after the 3rd and the 6th file
    batch.sync()
    assert len(synced) == 3 and sorted(p.name for p in tmp_path.iterdir()) == [
        f"{i}.json" for i in range(7)]


def test_sync_filesystem_runs_on_a_real_folder(tmp_path) -> None:
    from inference_core.rundir.writers import sync_filesystem

    sync_filesystem(tmp_path)  # syncfs(2), or os.sync() where the C library lacks it


def test_the_writer_thread_writes_in_order_and_hands_a_failure_back() -> None:
    from inference_core.run.writer import UserFileWriter

    done: list[int] = []
    writer = UserFileWriter()
    for i in range(50):
        writer.put(lambda i=i: done.append(i))
    assert writer.close() >= 0 and done == list(range(50))
    writer.put(lambda: done.append(50))  # after close: written at once, not lost
    assert done[-1] == 50

    writer = UserFileWriter()
    writer.put(lambda: done.append(-1))

    def full() -> None:
        raise OSError(28, "No space left on device")

    writer.put(full)
    writer.put(lambda: done.append(-2))  # after a failure nothing more is written
    with pytest.raises(OSError, match="No space"):
        writer.close()
    assert done[-1] == -1
    with pytest.raises(OSError):
        writer.put(lambda: None)
