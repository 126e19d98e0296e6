"""The run folder without an engine: typed user files, damaged and stray files, the lock, faults,
the reaper and the pre-Hydra writability check."""
from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import orjson
import psutil
import pytest

from conftest import REPO
from inference_core.cli import exit_code_of
from inference_core.data.records import Location
from inference_core.rundir import layout
from inference_core.rundir.faults import EXIT_STOPPED, RunStopped, as_run_stopped, check_writable
from inference_core.rundir.layout import (DamagedUserFile, UserFile, read_user_file,
                                          safe_user_filename, scan_user_files, user_file_of)
from inference_core.rundir.lock import RunLocked, hold_run_lock
from inference_core.rundir.merge import collect_user_files
from inference_core.rundir.resume import finished_users
from inference_core.rundir.writers import write_user_file

ITEM = {"location": {"record": 0, "collection": 0, "item": 1}, "prompt_tokens": 12,
        "truncated": False, "generated_samples": ["a", "b"], "finish_reasons": ["stop", "length"],
        "output_tokens": [3, 8], "reference": "ref"}


def user(user_hash: str = "u1", **item_extra: object) -> UserFile:
    return user_file_of(user_hash, "Ann", "DMSC", "all", "smol", [{**ITEM, **item_extra}])


def raw_test(*hashes: str) -> list:
    return [{"user_hash": h, "task": {"task_behavior_collections": [
        {"data": [{"context": []}, {"context": []}]}]}} for h in hashes]


# --- typed user files -------------------------------------------------------------------------

def test_user_file_json_is_what_the_pipeline_always_wrote(tmp_path):
    path = write_user_file(tmp_path, user())
    assert path.name == safe_user_filename("u1")
    doc = orjson.loads(path.read_bytes())
    assert list(doc) == ["user_hash", "file", "profile_name", "dataset", "ablation", "model",
                         "items"]
    assert doc["items"] == [ITEM] and list(doc["items"][0]) == list(ITEM)
    typed = read_user_file(path)
    assert typed == user() and typed.items[0].location == Location(0, 0, 1)


def test_unknown_item_keys_and_missing_reference_round_trip(tmp_path):
    extra = user(raw_samples=["<a>", "<b>"], answer_format_misses=1)
    no_ref = user_file_of("u2", None, "DMSC", "all", "smol",
                          [{k: v for k, v in ITEM.items() if k != "reference"}])
    for u in (extra, no_ref):
        assert UserFile.from_json(orjson.loads(orjson.dumps(u.to_json()))) == u
    assert list(extra.to_json()["items"][0])[-2:] == ["raw_samples", "answer_format_misses"]
    assert "reference" not in no_ref.to_json()["items"][0]


@pytest.mark.parametrize("content, why", [
    (b'{"user_hash": "u1", "items": [{"locat', "not whole JSON"),
    (b'{"user_hash": "u1"}', "field 'items' is missing"),
    (b'[1, 2]', "not an object"),
    (b'{"user_hash": "u1", "items": [{"location": {"record": 0}}]}', "missing"),
])
def test_damaged_user_file_names_the_path_and_why(tmp_path, content, why):
    path = tmp_path / "x.json"
    path.write_bytes(content)
    with pytest.raises(DamagedUserFile) as caught:
        read_user_file(path)
    assert str(path) in str(caught.value) and why in caught.value.why


def test_merge_names_strays_and_damaged_files_and_keeps_going(tmp_path, caplog):
    for record, h in enumerate(("u1", "u2", "u3")):
        write_user_file(tmp_path, user(h, location={"record": record, "collection": 0, "item": 1}))
    users = tmp_path / "users"
    own = users / safe_user_filename("u1")
    (users / f"{own.stem} (copy).json").write_bytes(own.read_bytes()[:300])  # a torn stray
    (users / safe_user_filename("u2")).write_bytes(b'{"user_hash": "u2", "ite')  # damaged own
    renamed = users / safe_user_filename("u4")  # whole, but its `file` field says u3's name
    renamed.write_bytes((users / safe_user_filename("u3")).read_bytes())
    filled: list = []
    disk = collect_user_files(tmp_path, raw_test("u1", "u2", "u3", "u4"), put=filled.append)
    assert [[i for i, item in enumerate(r["task"]["task_behavior_collections"][0]["data"])
             if "continuations" in item] for r in filled] == [[1], [], [1], []]
    assert {h for h, _ in disk.items} == {"u1", "u3"}
    named = {Path(f["file"]).name: f["why"] for f in disk.left_out}
    assert set(named) == {f"{own.stem} (copy).json", safe_user_filename("u2"), renamed.name}
    assert "not whole JSON" in named[safe_user_filename("u2")]
    assert "(copy).json is not one of this run's user files" in caplog.text
    # the damaged own file is an unfinished user: the resume generates it again
    expected = {h: {f"{r}/0/1"} for r, h in enumerate(("u1", "u2", "u3"))}
    assert finished_users(tmp_path, expected, 2) == {"u1", "u3"}


# --- one run per folder -----------------------------------------------------------------------

HOLD = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from inference_core.rundir.lock import hold_run_lock
    with hold_run_lock(Path(sys.argv[1])):
        print("held", flush=True)
        time.sleep(float(sys.argv[2]))
""")


def holder(folder: Path, seconds: float) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(folder), str(seconds)], cwd=REPO,
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_a_second_run_on_a_held_folder_exits_2_naming_the_holder(tmp_path, caplog):
    first = holder(tmp_path, 30)
    try:
        def second() -> None:
            with hold_run_lock(tmp_path):
                raise AssertionError("the lock was taken twice")

        assert exit_code_of(second) == 2
        assert f"pid {first.pid}" in caplog.text and os.uname().nodename in caplog.text
    finally:
        first.kill()
        first.wait()
    with hold_run_lock(tmp_path):  # the dead holder's lock is free again
        pass


@pytest.mark.slow
def test_two_processes_started_together_one_holds_the_other_is_refused(tmp_path):
    script = HOLD.replace('print("held", flush=True)', 'print("held", flush=True)')
    procs = [subprocess.Popen([sys.executable, "-c", script, str(tmp_path), "3"], cwd=REPO,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    results = [p.communicate(timeout=60) for p in procs]
    held = [out for out, _ in results if "held" in out]
    refused = [err for _, err in results if "RunLocked" in err]
    assert len(held) == 1 and len(refused) == 1
    assert "is in use by" in refused[0]


def test_a_dead_holders_lock_on_another_host_is_taken_over_once_its_heartbeat_is_stale(
        tmp_path, caplog):
    lock = layout.lock_path(tmp_path)
    lock.write_bytes(orjson.dumps({"host": "node-that-died", "pid": 1, "process_started": 0.0,
                                   "started_at": "2026-01-01T00:00:00+00:00", "command": "x"}))
    with pytest.raises(RunLocked, match="node-that-died"):  # fresh heartbeat: NFS flock aside
        with hold_run_lock(tmp_path):
            pass
    old = time.time() - 3600
    os.utime(lock, (old, old))
    with hold_run_lock(tmp_path):
        assert orjson.loads(lock.read_bytes())["pid"] == os.getpid()
    assert "taking over the lock of node-that-died" in caplog.text
    assert lock.read_bytes() == b""  # released


def test_shards_hold_their_own_locks_in_one_folder(tmp_path):
    with hold_run_lock(tmp_path, 0, 2), hold_run_lock(tmp_path, 1, 2):
        with pytest.raises(RunLocked):
            with hold_run_lock(tmp_path, 1, 2):
                pass


# --- disk full, read-only and vanished folders -----------------------------------------------

def mounted_tmpfs(folder, options: str):
    """A tmpfs of our own at `folder` (needs root), unmounted after the test."""
    folder.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)],
                      capture_output=True).returncode:
        pytest.skip(f"cannot mount a tmpfs ({options}) here (needs root)")
    yield folder
    subprocess.run(["umount", "-l", str(folder)], check=False)


@pytest.fixture
def small_tmpfs(tmp_path):
    yield from mounted_tmpfs(tmp_path / "small", "size=200k")


def test_disk_full_stops_with_one_line_and_the_same_run_completes_after(small_tmpfs):
    run = small_tmpfs / "run"
    run.mkdir()
    (run / "run.json").write_bytes(b"{}")
    big = [{**ITEM, "generated_samples": ["y" * 20000, "z" * 20000]}]
    for i in range(2):
        write_user_file(run, user_file_of(f"user{i}", None, "DMSC", "all", "smol", big))
    filler = small_tmpfs / "filler"
    with pytest.raises(OSError):  # fill the disk
        with open(filler, "wb") as handle:
            while True:
                handle.write(b"x" * 4096)
                handle.flush()
    written = 2
    with pytest.raises(RunStopped) as caught:
        for i in range(2, 50):
            write_user_file(run, user_file_of(f"user{i}", None, "DMSC", "all", "smol", big))
            written += 1
    message = str(caught.value)
    assert "\n" not in message and message.startswith("disk full writing ")
    assert f"{written} finished users are kept in {run / 'users'}" in message
    assert "run the same command again to resume" in message
    assert not list((run / "users").glob(".*.tmp"))  # no half file left behind
    assert f"users/{safe_user_filename(f'user{written}')}" in message  # the file it wrote
    filler.unlink()
    for i in range(3):
        write_user_file(run, user_file_of(f"user{i}", None, "DMSC", "all", "smol", big))
    assert len(scan_user_files(run).users) == 3


def test_read_only_and_vanished_folders_become_run_stopped(tmp_path):
    (tmp_path / "run.json").write_bytes(b"{}")
    ro = OSError(errno.EROFS, "Read-only file system", str(tmp_path / "users" / "a.json"))
    gone = OSError(errno.ENOENT, "No such file or directory", str(tmp_path / "shards" / "0.json"))
    outside = OSError(errno.ENOENT, "No such file or directory", "/data/train.json")
    assert "cannot be written (Read-only file system)" in str(as_run_stopped(ro))
    assert "vanished" in str(as_run_stopped(gone))
    assert as_run_stopped(outside) is None  # a missing dataset is not a run fault

    def fails() -> None:
        raise ro

    assert exit_code_of(fails) == EXIT_STOPPED


def test_a_dead_vllm_engine_is_a_resumable_stop(tmp_path, caplog):
    EngineDeadError = type("EngineDeadError", (Exception,), {})

    def dies() -> None:
        try:
            raise TimeoutError("RPC call to execute_model timed out.")
        except TimeoutError as err:
            raise EngineDeadError("EngineCore encountered an issue.") from err

    assert exit_code_of(dies, tmp_path) == EXIT_STOPPED
    line = caplog.records[-1].getMessage()
    assert "EngineDeadError" in line and "VLLM_EXECUTE_MODEL_TIMEOUT_SECONDS" in line
    assert "0 finished users are kept" in line


@pytest.fixture
def read_only_dir(tmp_path):
    yield from mounted_tmpfs(tmp_path / "ro", "ro,size=64k")


def test_read_only_output_dir_is_one_line_before_hydra_starts(read_only_dir):
    with pytest.raises(RunStopped, match="cannot be written"):
        check_writable(read_only_dir / "out")
    proc = subprocess.run([sys.executable, "-m", "inference_vllm", f"output_dir={read_only_dir}/out"],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == EXIT_STOPPED, proc.stderr[-2000:]
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Read-only file system" in lines[0], proc.stderr[-2000:]


# --- the reaper --------------------------------------------------------------------------------

PARENT = textwrap.dedent("""
    import subprocess, sys, time
    from inference_core.run.reaper import engine_reaper
    with engine_reaper(poll_seconds=0.2, grace_seconds=2):
        child = subprocess.Popen([sys.executable, "-c",
            "import subprocess, sys, time; "
            "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(300)']); "
            "time.sleep(300)"])
        time.sleep(1.5)  # the reaper has seen both
        print(child.pid, flush=True)
        time.sleep(300)
""")


def descendants_of(pid: int) -> list[psutil.Process]:
    return psutil.Process(pid).children(recursive=True)


@pytest.mark.slow
def test_reaper_kills_the_grandchildren_of_a_sigkilled_parent(tmp_path):
    parent = subprocess.Popen([sys.executable, "-c", PARENT], cwd=REPO, stdout=subprocess.PIPE,
                              text=True)
    int(parent.stdout.readline())
    spawned = [p for p in descendants_of(parent.pid) if "sleep(300)" in " ".join(p.cmdline())]
    assert len(spawned) == 2
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    gone, alive = psutil.wait_procs(spawned, timeout=10)
    for p in alive:
        p.kill()
    assert not alive, "engine-like processes outlived their SIGKILLed parent"


def test_reaper_leaves_processes_alone_on_a_normal_exit_and_spares_older_ones():
    from inference_core.run.reaper import engine_reaper

    older = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        with engine_reaper(poll_seconds=0.2) as watchdog:
            time.sleep(0.5)
        assert watchdog.returncode == 0
        assert older.poll() is None
    finally:
        older.kill()
        older.wait()


def test_a_numeric_id_round_trips_and_a_bool_is_no_id(tmp_path):
    numeric = user(123)
    assert numeric.file == safe_user_filename("123") and numeric.key == "123"
    path = write_user_file(tmp_path, numeric)
    assert orjson.loads(path.read_bytes())["user_hash"] == 123 and read_user_file(path) == numeric
    path.write_bytes(orjson.dumps({**numeric.to_json(), "user_hash": True}))
    with pytest.raises(DamagedUserFile, match="neither a string nor a number"):
        read_user_file(path)
