"""A rerun of a finished folder starts no engine, skipped items or not, unless a rerun would
generate something: through the fake engine (tests only), in seconds."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

from conftest import compose, dialogue_item, user_record, write_dataset
from fake_engine import FakeEngine
from inference_core.run.job import Job, prepare_job
from inference_core.run.pipeline import run_job
from inference_core.rundir.resume import looks_finished

TINY = ("sampling.num_samples=1", "sampling.max_tokens=8", "evaluate=false", "report=false",
        "allow_skips=true")
# A window in which some Chameleons prompts cannot fit (the longest bare prompt is 278 tokens).
NARROW = "model.max_model_len=272"


def job_for(tmp_path: Path, *overrides: str) -> Job:
    return prepare_job(compose(f"output_dir={tmp_path / 'out'}", *TINY, *overrides))


class Starts:
    """A `start` that counts the engines started and hands out fake ones."""

    def __init__(self, **fake: Any) -> None:
        self.engines: list[FakeEngine] = []
        self.fake = fake

    def __call__(self, job: Any, adapters: Any) -> FakeEngine:
        self.engines.append(FakeEngine(**self.fake))
        return self.engines[-1]


def summary_of(job: Job) -> dict[str, Any]:
    return orjson.loads((job.output_dir / "inference_summary.json").read_bytes())


def finished(job: Job) -> bool:
    return looks_finished(job.output_dir, job.identity(), job.shard_count, job.overwrite)


@pytest.mark.slow
def test_prompts_that_never_fit_leave_a_finished_folder_that_starts_no_engine(tmp_path):
    first = Starts()
    run_job(job_for(tmp_path, NARROW), first)
    summary = summary_of(job_for(tmp_path, NARROW))
    reasons = {s["reason"] for s in summary["skipped_items"]}
    assert summary["num_data_items"] > 0 and reasons and all("budget" in r for r in reasons)
    before = summary_of(job_for(tmp_path, NARROW))
    rerun = Starts()
    run_job(job_for(tmp_path, NARROW), rerun)
    assert rerun.engines == [] and finished(job_for(tmp_path, NARROW))
    # Every user is on disk, those without a prompt too: the folder is left as it was.
    assert summary_of(job_for(tmp_path, NARROW)) == before
    # overwrite=true starts afresh, with an engine.
    assert not finished(job_for(tmp_path, NARROW, "overwrite=true"))
    again = Starts()
    run_job(job_for(tmp_path, NARROW, "overwrite=true"), again)
    assert len(again.engines) == 1 and again.engines[0].requests


def test_items_the_input_cannot_give_leave_a_finished_folder_too(tmp_path):
    test = [user_record("u1", "A", [{"context": {"not": "a list"}},
                                    dialogue_item(None, ("R", "fine"), name="A")]),
            {"user": {}, "task": {}}]  # a record without a user_hash
    folder = write_dataset(tmp_path / "Messy", [], test)
    args = ("dataset=custom", f"dataset.path={folder}")
    run_job(job_for(tmp_path, *args), Starts())
    skipped = summary_of(job_for(tmp_path, *args))["skipped_items"]
    assert [s.get("bad_input") for s in skipped] == [True, True]
    rerun = Starts()
    run_job(job_for(tmp_path, *args), rerun)
    assert rerun.engines == []


@pytest.mark.slow
def test_blank_samples_are_asked_again_so_their_folder_starts_the_engine_at_once(tmp_path):
    """A rerun draws blank items again (README: users whose file is complete are kept): its
    engine starts beside the data load, as for any unfinished folder."""
    blank = {"blank": lambda r, j: r.request_id.endswith("/0")}
    run_job(job_for(tmp_path, "sampling.blank_retries=0"), Starts(**blank))
    job = job_for(tmp_path, "sampling.blank_retries=0")
    assert summary_of(job)["skipped_items"] and not finished(job)
    rerun = Starts()
    run_job(job, rerun)
    assert len(rerun.engines) == 1 and rerun.engines[0].requests


def test_a_skip_the_users_file_does_not_list_is_not_taken_as_final(tmp_path):
    run_job(job_for(tmp_path, NARROW), Starts())
    job = job_for(tmp_path, NARROW)
    unfit_users = {s["user_hash"] for s in summary_of(job)["skipped_items"]}
    for path in (job.output_dir / "users").iterdir():  # a hand-trimmed or damaged user file
        if orjson.loads(path.read_bytes())["user_hash"] in unfit_users:
            path.write_text("{")
            break
    assert not finished(job)
