"""End to end through real vLLM (CPU build) on the sample data: load -> prompts -> engine -> files."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from conftest import DATA, REPO, compose, dialogue_item, user_record, write_dataset
from inference_core.run.job import prepare_job
from inference_core.run.pipeline import run_job

pytestmark = pytest.mark.engine
SUMMARY_KEYS = {"checkpoint", "dataset", "ablation_config", "engine", "num_users", "num_data_items",
                "num_samples_per_item", "total_samples", "prompt_tokens", "generated_tokens",
                "inference_time_seconds", "model_load_seconds", "throughput_samples_per_sec",
                "output_tokens_per_sec", "tensor_parallel_size", "sampling_params",
                "truncated_prompts", "skipped_items", "versions", "device", "timestamp",
                "samples_generated", "samples_discarded", "samples_from_unrecorded_sessions"}
TINY = ["sampling.max_tokens=16", "sampling.num_samples=3"]


def load(path: Path):
    return orjson.loads(path.read_bytes())


def test_items(test_file: Path):
    for r_i, record in enumerate(load(test_file)):
        for c_i, col in enumerate(record["task"]["task_behavior_collections"]):
            for d_i, item in enumerate(col["data"]):
                yield (r_i, c_i, d_i), record["user_hash"], item


test_items.__test__ = False


def assert_complete_run(out: Path, test_file: Path, n: int, max_users: int | None = None) -> dict:
    """The output contract: every item (of the first `max_users` records) filled with n non-blank
    samples, the others untouched, one file per user."""
    source = {loc: item for loc, _, item in test_items(test_file)}
    filled = {loc: item for loc, _, item in test_items(out / "test_leaderboard.json")}
    assert filled.keys() == source.keys()
    wanted = {loc for loc in source if max_users is None or loc[0] < max_users}
    for loc, item in filled.items():
        if loc in wanted:
            conts = item.pop("continuations")
            assert len(conts) == n and all(isinstance(t, str) and t.strip() for t in conts), loc
        assert item == source[loc]  # everything else unchanged
    users = [load(p) for p in sorted((out / "users").iterdir())]
    hashes = [u["user_hash"] for u in users]
    assert len(hashes) == len(set(hashes)) == len({h for loc, h, _ in test_items(test_file)
                                                   if loc in wanted})
    for user, path in zip(users, sorted((out / "users").iterdir())):
        assert user["file"] == path.name
        for item in user["items"]:
            assert len(item["generated_samples"]) == len(item["finish_reasons"]) == n
            assert set(item["location"]) == {"record", "collection", "item"}
            assert item["prompt_tokens"] > 0
    summary = load(out / "inference_summary.json")
    assert SUMMARY_KEYS <= summary.keys()
    assert summary["num_data_items"] == len(wanted)
    assert summary["total_samples"] == len(wanted) * n
    assert summary["num_users"] == len(users)
    assert summary["generated_tokens"] >= summary["total_samples"]
    return summary


def run(engine, *overrides: str) -> Path:
    return run_job(prepare_job(compose(*overrides)), lambda job, adapters: engine)


def test_chameleons_sample_every_item_gets_num_samples(vllm_engine, tmp_path):
    out = run(vllm_engine, f"output_dir={tmp_path / 'out'}", *TINY)
    summary = assert_complete_run(out, DATA / "Chameleons" / "test_leaderboard.json", 3)
    assert summary["dataset"] == "Chameleons" and summary["engine"] == "vllm"
    assert summary["truncated_prompts"] >= 1  # the sample holds a user whose history cannot fit
    user_files = [load(p) for p in (out / "users").iterdir()]
    assert any(i.get("reference") for u in user_files for i in u["items"])


def test_tagged_format_fills_every_item_of_both_samples(vllm_engine, tmp_path):
    """The researchers' training format through real vLLM: the prompt ends inside [ANSWER],
    the closing tag is the stop string, and every item still gets its samples."""
    for dataset, ablation in (("Chameleons", "context_only"), ("DMSC", "profile_and_history")):
        out = run(vllm_engine, f"dataset={dataset}", f"ablation={ablation}", "prompt=tagged",
                  f"output_dir={tmp_path / dataset}", "allow_skips=true", *TINY)
        summary = load(out / "inference_summary.json")
        assert summary["sampling_params"]["stop"] == ["[/ANSWER]"]
        assert summary["skipped_items"] == []
        assert summary["num_data_items"] == len(list(test_items(DATA / dataset / "test_leaderboard.json")))
        assert load(out / "run.json")["prompt"]["name"] == "tagged"


def test_dmsc_profile_and_history(vllm_engine, tmp_path):
    out = run(vllm_engine, "dataset=DMSC", "ablation=profile_and_history",
              f"output_dir={tmp_path / 'out'}", *TINY)
    summary = assert_complete_run(out, DATA / "DMSC" / "test_leaderboard.json", 3)
    assert summary["ablation_config"] == "profile_and_history"


def test_unseen_dataset_with_odd_ids_and_huge_histories(vllm_engine, tmp_path):
    odd_ids = ["../../etc/passwd", "a/b\\c:d*?", "", "x" * 500, "用户😀"]
    history = [dialogue_item(f"past line {i} " + "words " * 30, ("R", "q"), name="N",
                             timestamp=f"2001-{i % 12 + 1:02d}-01") for i in range(400)]
    train = [user_record(h, "N", history) for h in odd_ids]
    test = [user_record(h, "N", [dialogue_item(None, ("R", "what now?"), name="N"),
                                 dialogue_item(None, ("R", "giant " * 50_000), name="N")])
            for h in odd_ids]
    folder = write_dataset(tmp_path / "Unseen", train, test)
    out = run(vllm_engine, "dataset=custom", f"dataset.path={folder}",
              f"output_dir={tmp_path / 'out'}", *TINY)
    summary = assert_complete_run(out, folder / "test_leaderboard.json", 3)
    assert summary["dataset"] == "Unseen" and summary["truncated_prompts"] == 10
    assert sorted(os.listdir(tmp_path)) == ["Unseen", "out"]  # nothing escaped


def test_command_line_run_and_config_error(tmp_path):
    """The real entry point: Hydra overrides, `.hydra/` in the output folder, exit code 2."""
    out = tmp_path / "cli"
    cmd = [sys.executable, "-m", "inference_vllm", "dataset=DMSC", "ablation=profile_only",
           f"output_dir={out}", "sampling.num_samples=2", "sampling.max_tokens=8"]
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert_complete_run(out, DATA / "DMSC" / "test_leaderboard.json", 2)
    assert (out / ".hydra" / "config.yaml").is_file()
    bad = subprocess.run(cmd[:3] + ["model.path=/nonexistent/ckpt", f"output_dir={tmp_path / 'x'}"],
                         cwd=REPO, capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2
    assert "model.path=/nonexistent/ckpt does not exist" in bad.stderr + bad.stdout


def test_three_ablations_share_one_engine_start(vllm_engine, tmp_path, tokenizer):
    """One real engine start serves three ablations: three complete folders with one
    engine_session id, read by the leaderboard as three rows, each with the greedy texts of its
    own separate run (up to the near-ties batching can turn)."""
    from inference_core.evaluation.leaderboard import main as leaderboard
    from inference_core.run.job import prepare_jobs
    from inference_core.run.pipeline import run_jobs

    three = "ablations=[profile_only,history_only,context_only]"
    greedy = ["sampling=greedy", "sampling.max_tokens=16"]
    starts = []
    run_jobs(prepare_jobs(compose(f"output_dir={tmp_path}/one/${{ablation.name}}", three,
                                  *greedy)), lambda job, adapters: starts.append(1) or vllm_engine)
    for job in prepare_jobs(compose(f"output_dir={tmp_path}/apart/${{ablation.name}}", three,
                                    *greedy)):
        run_job(job, lambda job, adapters: vllm_engine)
    assert len(starts) == 1
    sessions, texts = set(), {}
    for ablation in ("profile_only", "history_only", "context_only"):
        summary = assert_complete_run(tmp_path / "one" / ablation,
                                      DATA / "Chameleons" / "test_leaderboard.json", 1)
        sessions.add(summary["engine_session"]["id"])
        for mode in ("one", "apart"):
            for _, user, item in test_items(tmp_path / mode / ablation / "test_leaderboard.json"):
                texts.setdefault((ablation, user, str(item["context"])), {})[mode] = \
                    item["continuations"][0]
    assert len(sessions) == 1
    # A near-tie falls to whichever side the CPU kernels round to in another batch: the bounds
    # of the engine-agreement test (test_hf_engine): at least half exact, at least 3 of 4
    # agreeing on their first 4 tokens.
    exact = [k for k, t in texts.items() if t["one"] == t["apart"]]
    assert len(exact) >= 0.5 * len(texts), texts
    ids = [[tokenizer(t[m], add_special_tokens=False)["input_ids"][:4] for m in ("one", "apart")]
           for t in texts.values()]
    assert sum(a == b for a, b in ids) >= 0.75 * len(ids), texts
    assert leaderboard([str(tmp_path / "one"), "--out", str(tmp_path / "board"),
                        "--no-reports"]) == 0
    rows = load(tmp_path / "board" / "leaderboard.json")["rows"]
    assert sorted(r["ablation"] for r in rows) == ["context_only", "history_only", "profile_only"]
