"""Resume, refusal of another run's folder, skipped items, duplicate users (shared real engine)."""
from __future__ import annotations

import orjson
import pytest

from conftest import DATA, compose, dialogue_item, user_record, write_dataset
from inference_core.cli import run_cli
from test_vllm_pipeline import assert_complete_run, load

pytestmark = pytest.mark.engine
TINY = ["sampling.max_tokens=8", "sampling.num_samples=2"]


def cli(engine, *overrides: str) -> int:
    return run_cli(compose(*overrides), lambda job, adapters: engine)


def test_resume_regenerates_only_missing_or_broken_users(vllm_engine, tmp_path):
    out = tmp_path / "out"
    assert cli(vllm_engine, "dataset=DMSC", f"output_dir={out}", *TINY) == 0
    files = sorted((out / "users").iterdir())
    before = {p.name: p.read_bytes() for p in files}
    files[0].unlink()                                   # never written
    files[1].write_bytes(files[1].read_bytes()[:50])    # torn (not possible with atomic writes, still)
    broken = load(files[2])
    broken["items"][0]["generated_samples"] = broken["items"][0]["generated_samples"][:1]
    files[2].write_bytes(orjson.dumps(broken))          # too few samples
    assert cli(vllm_engine, "dataset=DMSC", f"output_dir={out}", *TINY) == 0
    summary = assert_complete_run(out, DATA / "DMSC" / "test_leaderboard.json", 2)
    assert summary["resumed_users"] == len(files) - 3
    regenerated = 2 * sum(len(load(p)["items"]) for p in files[:3])
    assert summary["shards"][0]["last_session"]["samples_generated"] == regenerated
    # the files on disk are counted once, the first session's replaced samples apart
    assert summary["samples_generated"] == summary["total_samples"]
    assert summary["samples_discarded"] == regenerated
    assert summary["samples_from_unrecorded_sessions"] == 0
    # the engine's figures (throughput) still cover both sessions' work
    assert summary["shards"][0]["samples_generated"] == summary["total_samples"] + regenerated
    for path in files[3:]:
        assert path.read_bytes() == before[path.name]  # finished users untouched


def test_other_settings_in_the_same_folder_are_refused_unless_overwrite(vllm_engine, tmp_path):
    out = tmp_path / "out"
    assert cli(vllm_engine, "dataset=DMSC", f"output_dir={out}", "max_users=2", *TINY) == 0
    first = (out / "test_leaderboard.json").read_bytes()
    assert cli(vllm_engine, "dataset=DMSC", f"output_dir={out}", "max_users=2",
               "ablation=profile_only", *TINY) == 2
    assert (out / "test_leaderboard.json").read_bytes() == first  # nothing lost
    assert cli(vllm_engine, "dataset=DMSC", f"output_dir={out}", "max_users=2",
               "ablation=profile_only", "overwrite=true", *TINY) == 0
    assert load(out / "inference_summary.json")["ablation_config"] == "profile_only"
    assert load(out / "inference_summary.json")["resumed_users"] == 0


def test_skipped_items_fail_the_run_unless_allowed_and_duplicates_merge(vllm_engine, tmp_path):
    test = [user_record("dup", "A", [dialogue_item(None, ("R", "one"), name="A")]),
            user_record("bad", "B", [{"context": {"not": "a list"}},
                                     dialogue_item(None, ("R", "fine"), name="B")]),
            user_record("dup", "A", [dialogue_item(None, ("R", "two"), name="A")])]
    folder = write_dataset(tmp_path / "Messy", [], test)
    args = ["dataset=custom", f"dataset.path={folder}", f"output_dir={tmp_path / 'out'}", *TINY]
    assert cli(vllm_engine, *args) == 3
    summary = load(tmp_path / "out" / "inference_summary.json")
    assert summary["skipped_items"] == [{"location": {"record": 1, "collection": 0, "item": 0},
                                         "user_hash": "bad",
                                         "reason": "context is neither a list nor text",
                                         "bad_input": True}]
    assert cli(vllm_engine, *args, "allow_skips=true") == 0
    board = load(tmp_path / "out" / "test_leaderboard.json")
    items = [i for r in board for c in r["task"]["task_behavior_collections"] for i in c["data"]]
    assert [len(i.get("continuations", [])) for i in items] == [2, 0, 2, 2]
    (dup,) = [load(p) for p in (tmp_path / "out" / "users").iterdir() if load(p)["user_hash"] == "dup"]
    assert [i["location"]["record"] for i in dup["items"]] == [0, 2]
