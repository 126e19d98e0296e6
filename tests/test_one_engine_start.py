"""Many jobs of one checkpoint through one engine start (`ablations=`, `datasets=`), and an engine
that starts loading at once, beside the data load: through the fake engine (tests only), in
seconds. The real vLLM run of three ablations is in test_vllm_pipeline.py."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import orjson
import pytest

from conftest import DATA, compose
from fake_engine import FakeEngine, lend
from inference_core.cli import run_outcome
from inference_core.config import ConfigError
from inference_core.data.loader import InputError
from inference_core.run import pipeline
from inference_core.run.job import prepare_job, prepare_jobs
from inference_core.run.pipeline import JobsFailed, run_job, run_jobs
from inference_core.run.signals import Interrupted
from inference_core.rundir.lock import hold_run_lock
from test_vllm_pipeline import assert_complete_run, load

TINY = ["sampling.num_samples=2", "sampling.max_tokens=8", "evaluate=false", "report=false"]
ABLATIONS = ["context_only", "history_and_context", "history_only", "profile_and_context",
             "profile_and_history", "profile_and_history_and_context", "profile_only"]
# What differs between two runs of the same job: when and in which session it ran.
RUN_FACTS = {"session", "sessions", "last_session", "engine_session", "finished_at", "timestamp",
             "inference_time_seconds", "load_data_seconds", "build_prompts_seconds",
             "prompts_ready_seconds", "first_request_seconds", "write_seconds",
             "write_wait_seconds", "throughput_samples_per_sec", "output_tokens_per_sec",
             "after_run_seconds", "model_load_seconds", "engine_stats", "output_dir", "device"}


def jobs_of(root: Path, *overrides: str):
    return prepare_jobs(compose(f"output_dir={root}/${{ablation.name}}", *TINY, *overrides))


def without_run_facts(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: without_run_facts(v) for k, v in value.items() if k not in RUN_FACTS}
    if isinstance(value, list):
        return [without_run_facts(v) for v in value]
    return value


def folder_contents(folder: Path) -> dict[str, Any]:
    """Every file of a run folder, less what says when it ran (the lock is the command's)."""
    return {str(p.relative_to(folder)): without_run_facts(load(p)) for p in folder.rglob("*.json")}


@pytest.mark.slow
def test_seven_ablations_in_one_run_write_what_seven_runs_write(tmp_path: Path) -> None:
    shared = FakeEngine()
    starts: list[Any] = []
    jobs = jobs_of(tmp_path / "one", "ablations=all")
    assert [j.ablation.name for j in jobs] == ABLATIONS
    run_jobs(jobs, lambda job, adapters: starts.append(job) or shared)
    assert len(starts) == 1 and shared.closed
    for job in jobs_of(tmp_path / "apart", "ablations=all"):
        run_job(job, lend(FakeEngine()))
    sessions = set()
    for ablation in ABLATIONS:
        one, apart = tmp_path / "one" / ablation, tmp_path / "apart" / ablation
        assert_complete_run(one, DATA / "Chameleons" / "test_leaderboard.json", 2)
        assert load(one / "run.json") == {**load(apart / "run.json")}
        assert folder_contents(one) == folder_contents(apart)
        # The composed config its own command would have written, with its own ablation.
        assert f"name: {ablation}\n" in (one / ".hydra" / "config.yaml").read_text()
        assert f"- ablation={ablation}\n" in (one / ".hydra" / "overrides.yaml").read_text()
        session = load(one / "inference_summary.json")["engine_session"]
        sessions.add(session["id"])
        assert session["jobs"] == [str(tmp_path / "one" / a) for a in ABLATIONS]
    assert len(sessions) == 1
    # The fake text carries its prompt's digest: a completion routed to another job would
    # differ from that job's separate run above.
    first_items = {a: load(tmp_path / "one" / a / "test_leaderboard.json")[0]["task"][
        "task_behavior_collections"][0]["data"][0]["continuations"][0] for a in ABLATIONS}
    assert len(set(first_items.values())) == len(ABLATIONS)


def test_each_job_records_its_own_span_and_the_session_its_own_rate(tmp_path: Path) -> None:
    """In a shared start a job's figures are its own (its samples, the span from its first
    request to its last completion); the engine_session's are the start's (all the jobs'
    samples over its generation time), the same in every folder."""
    jobs = prepare_jobs(compose(f"output_dir={tmp_path}/${{dataset.name}}", *TINY,
                                "datasets=[Chameleons,DMSC]", "ablations=[profile_only]"))
    run_jobs(jobs, lend(FakeEngine(delay=0.02)))
    cham, dmsc = (load(j.output_dir / "inference_summary.json") for j in jobs)
    session = cham["engine_session"]
    assert dmsc["engine_session"] == session
    assert session["samples_generated"] == cham["samples_generated"] + dmsc["samples_generated"]
    assert session["throughput_samples_per_sec"] == pytest.approx(
        session["samples_generated"] / session["inference_time_seconds"], rel=0.02)
    # Chameleons' users come first: its span ends while DMSC's requests are still served.
    assert 0 < cham["inference_time_seconds"] < 0.8 * session["inference_time_seconds"]
    assert 0 < dmsc["inference_time_seconds"] <= session["inference_time_seconds"]
    assert cham["throughput_samples_per_sec"] == pytest.approx(
        cham["samples_generated"] / cham["inference_time_seconds"], rel=0.02)


def test_a_users_prompts_of_every_ablation_reach_the_engine_together(tmp_path: Path) -> None:
    engine = FakeEngine()
    run_jobs(jobs_of(tmp_path, "ablations=[profile_only,history_only]"), lend(engine))
    runs = [r.request_id.split("/")[0] for r in engine.requests]
    # user 1's two items for job 0, then for job 1, then user 2's ...
    assert runs[:4] == ["0", "0", "1", "1"]


def test_datasets_with_their_own_sampling_share_one_stream(tmp_path: Path) -> None:
    engine = FakeEngine()
    jobs = prepare_jobs(compose(f"output_dir={tmp_path}/${{dataset.name}}", *TINY,
                                "datasets=[Chameleons,dmsc_8b]", "ablations=[profile_only]",
                                "model.path=${root:.cache/models/SmolLM2-135M-Instruct}"))
    assert [(j.dataset_name, j.sampling.temperature) for j in jobs] == [
        ("Chameleons", 1.0), ("DMSC", 0.9)]
    run_jobs(jobs, lend(engine))
    assert engine.calls == 1  # no job waited for another's end
    by_run = {r.request_id.split("/")[0]: r.sampling for r in engine.requests}
    assert by_run == {"0": jobs[0].sampling, "1": jobs[1].sampling}


@pytest.mark.slow
def test_a_killed_run_resumes_only_the_missing_users_of_each_folder(tmp_path: Path) -> None:
    with pytest.raises(Interrupted):
        run_jobs(jobs_of(tmp_path, "ablations=[profile_only,history_only]"),
                 lend(FakeEngine(interrupt_after=9)))
    kept = {a: {p.name for p in (tmp_path / a / "users").iterdir()}
            for a in ("profile_only", "history_only")}
    assert all(kept.values()) and sum(map(len, kept.values())) < 16
    again = FakeEngine()
    run_jobs(jobs_of(tmp_path, "ablations=[profile_only,history_only]"), lend(again))
    for a in ("profile_only", "history_only"):
        summary = assert_complete_run(tmp_path / a, DATA / "Chameleons" / "test_leaderboard.json",
                                      2)
        assert summary["resumed_users"] == len(kept[a])
    asked = {r.request_id.split("/")[0] for r in again.requests}
    assert asked == {"0", "1"} and len(again.requests) == 30 - sum(
        len(load(next((tmp_path / a / "users").glob(n)))["items"]) for a in kept for n in kept[a])


@pytest.mark.slow
def test_one_job_with_broken_data_is_named_and_the_others_complete(tmp_path: Path, caplog) -> None:
    from conftest import write_dataset

    broken = tmp_path / "broken"
    write_dataset(broken, [], [])
    (broken / "test_leaderboard.json").write_text("[{")
    good = jobs_of(tmp_path / "runs", "ablations=[profile_only,history_only,context_only]")
    bad = prepare_job(compose(f"output_dir={tmp_path}/bad", *TINY, "dataset=custom",
                              f"dataset.path={broken}"))
    with pytest.raises(JobsFailed) as failed:
        run_jobs([*good, bad], lend(FakeEngine()))
    assert [job.output_dir for job, _ in failed.value.failures] == [bad.output_dir]
    assert isinstance(failed.value.failures[0][1], InputError)
    assert f"{bad.output_dir}: " in caplog.text and "test_leaderboard.json" in caplog.text
    for job in good:
        assert_complete_run(job.output_dir, DATA / "Chameleons" / "test_leaderboard.json", 2)
    assert not (bad.output_dir / "run.json").exists()
    code, reason = run_outcome(compose(f"output_dir={tmp_path}/bad2", *TINY, "dataset=custom",
                                       f"dataset.path={broken}"), lend(FakeEngine()))
    assert code == 2 and "test_leaderboard.json" in reason


def test_a_folder_held_by_another_command_is_named_and_the_others_run(tmp_path: Path) -> None:
    jobs = jobs_of(tmp_path, "ablations=[profile_only,history_only]")
    with hold_run_lock(jobs[1].output_dir, 0, 1):
        code, reason = run_outcome(compose(f"output_dir={tmp_path}/${{ablation.name}}", *TINY,
                                           "ablations=[profile_only,history_only]"),
                                   lend(FakeEngine()))
    assert code == 2 and "history_only" in reason and "1 of 2 jobs failed" in reason
    assert_complete_run(jobs[0].output_dir, DATA / "Chameleons" / "test_leaderboard.json", 2)


def test_two_jobs_in_one_folder_exit_2_before_anything_loads(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(pipeline, "load_dataset", lambda *a: pytest.fail("data was loaded"))
    with pytest.raises(ConfigError, match="would both write to"):
        prepare_jobs(compose(f"output_dir={tmp_path}/one", "ablations=[profile_only,history_only]"))
    code, reason = run_outcome(compose(f"output_dir={tmp_path}/one", *TINY,
                                       "ablations=[profile_only,history_only]"),
                               lambda job, adapters: pytest.fail("an engine was started"))
    assert code == 2 and "ablation=history_only" in reason
    assert not (tmp_path / "one").exists()


def test_unknown_ablation_or_dataset_names_the_choices(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unknown ablation 'profile'; choices: all, context_only"):
        prepare_jobs(compose("ablations=[profile]"))
    with pytest.raises(ConfigError, match="'DMCS' is neither a dataset"):
        prepare_jobs(compose("datasets=[DMCS]"))


def test_the_engine_loads_while_the_data_loads(tmp_path: Path, monkeypatch) -> None:
    """A slow engine start and a slow data load overlap: the start begins before the load ends."""
    times: dict[str, float] = {}
    real_load = pipeline.load_dataset

    def slow_load(*args: Any) -> Any:
        dataset = real_load(*args)
        time.sleep(0.5)
        times["data_loaded"] = time.perf_counter()
        return dataset

    def slow_start(job: Any, adapters: Any) -> FakeEngine:
        times["engine_start"] = time.perf_counter()
        time.sleep(0.5)
        times["engine_ready"] = time.perf_counter()
        return FakeEngine()

    monkeypatch.setattr(pipeline, "load_dataset", slow_load)
    out = run_job(prepare_job(compose(f"output_dir={tmp_path}/out", *TINY)), slow_start)
    assert times["engine_start"] < times["data_loaded"]
    assert_complete_run(out, DATA / "Chameleons" / "test_leaderboard.json", 2)


def test_a_failed_engine_start_claims_no_folder(tmp_path: Path) -> None:
    def broken(job: Any, adapters: Any) -> FakeEngine:
        time.sleep(0.5)  # prompts are built meanwhile
        raise RuntimeError("no memory for the weights")

    job = prepare_job(compose(f"output_dir={tmp_path}/out", *TINY))
    with pytest.raises(RuntimeError, match="no memory"):
        run_job(job, broken)
    assert not (job.output_dir / "run.json").exists()
    assert not (job.output_dir / "users").exists()


@pytest.mark.slow
def test_finished_folders_start_no_engine_and_are_left_as_they_are(tmp_path: Path,
                                                                    monkeypatch) -> None:
    run_jobs(jobs_of(tmp_path, "ablations=[profile_only,history_only]"), lend(FakeEngine()))
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    from inference_core.prompts.builder import PromptBuilder

    monkeypatch.setattr(PromptBuilder, "build_user", lambda *a: pytest.fail("a prompt was built"))
    run_jobs(jobs_of(tmp_path, "ablations=[profile_only,history_only]"),
             lambda job, adapters: pytest.fail("an engine was started"))
    # Not merged, scored nor reported again: every file as the first run left it.
    after = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    assert after == before


@pytest.mark.slow
def test_the_command_line_logs_into_its_own_folder_not_a_jobs(tmp_path: Path) -> None:
    """Hydra's .hydra/ and run.log of a many-job command go under multirun/, not into the folder
    of the default ablation (no such job); a dry run writes each job's prompts."""
    import subprocess
    import sys

    from conftest import REPO

    done = subprocess.run(
        [sys.executable, "-m", "inference_vllm", "ablations=[profile_only,history_only]",
         "dry_run=true", "max_users=1", f"output_dir={tmp_path}/${{ablation.name}}"],
        cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["history_only", "profile_only"]
    assert all((tmp_path / a / "prompts.jsonl").is_file() for a in ("profile_only", "history_only"))
