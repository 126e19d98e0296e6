"""The pipeline around a fake engine (tests/fake_engine.py): collector, redraws, resume, shards,
accounting and the summary, in well under a second each. No model is loaded, only its tokenizer."""
from __future__ import annotations

import time
from pathlib import Path

import orjson
import pytest

from conftest import DATA, compose
from fake_engine import FakeEngine, lend
from inference_core.prompts import builder as prompt_module
from inference_core.run.finish import SkippedItemsError
from inference_core.run.job import prepare_job
from inference_core.run.pipeline import run_job
from inference_core.run.signals import Interrupted
from test_vllm_pipeline import assert_complete_run, load

TINY = ["sampling.num_samples=2", "sampling.max_tokens=8", "evaluate=false", "report=false"]


def job_for(tmp_path: Path, *overrides: str, name: str = "out"):
    return prepare_job(compose(f"output_dir={tmp_path / name}", *TINY, *overrides))


def test_every_item_filled_and_summary_counts_the_files(tmp_path: Path) -> None:
    engine = FakeEngine()
    out = run_job(job_for(tmp_path), lend(engine))
    summary = assert_complete_run(out, DATA / "Chameleons" / "test_leaderboard.json", 2)
    assert summary["samples_generated"] == summary["total_samples"] == 2 * len(engine.requests)
    assert summary["samples_discarded"] == summary["samples_from_unrecorded_sessions"] == 0
    (session,) = summary["shards"][0]["sessions"]
    assert {load(p)["session"] for p in (out / "users").iterdir()} == {session["id"]}
    assert session["samples_generated"] == summary["total_samples"]
    assert summary["engine"] == "fake" and engine.closed
    assert summary["unusable_samples"] == 0


def test_blank_samples_are_drawn_again_with_a_new_seed(tmp_path: Path) -> None:
    first_round: set[str] = set()

    def blank(request, j):  # every first draw of an item is blank once
        if request.request_id in first_round:
            return False
        first_round.add(request.request_id)
        return True

    engine = FakeEngine(blank=blank)
    out = run_job(job_for(tmp_path), lend(engine))
    assert_complete_run(out, DATA / "Chameleons" / "test_leaderboard.json", 2)
    by_id: dict[str, list] = {}
    for r in engine.requests:
        by_id.setdefault(r.request_id, []).append(r)
    assert all(len(rs) == 2 and rs[0].seed != rs[1].seed and rs[1].num_samples == 1
               for rs in by_id.values())
    assert load(out / "inference_summary.json")["unusable_samples"] == len(by_id)


def test_samples_still_blank_after_the_retries_are_skipped_not_filled(tmp_path: Path) -> None:
    engine = FakeEngine(blank=lambda r, j: r.request_id.endswith("/0"))
    with pytest.raises(SkippedItemsError):
        run_job(job_for(tmp_path, "sampling.blank_retries=1"), lend(engine))
    summary = load(tmp_path / "out" / "inference_summary.json")
    assert [s["reason"] for s in summary["skipped_items"]] == [
        "blank or unusable samples after 1 retries"]
    filled = load(tmp_path / "out" / "test_leaderboard.json")
    first = filled[0]["task"]["task_behavior_collections"][0]["data"][0]
    assert "continuations" not in first  # never a placeholder


def test_an_engine_error_lists_the_item_with_its_message(tmp_path: Path) -> None:
    engine = FakeEngine(fail=lambda r: "HTTP 400: prompt too long" if r.request_id.endswith("/1")
                        else None)
    run_job(job_for(tmp_path, "allow_skips=true"), lend(engine))
    summary = load(tmp_path / "out" / "inference_summary.json")
    assert [s["reason"] for s in summary["skipped_items"]] == ["HTTP 400: prompt too long"]
    assert summary["num_data_items"] == 14


def test_interrupted_run_resumes_only_what_is_missing(tmp_path: Path) -> None:
    job = job_for(tmp_path)
    with pytest.raises(Interrupted):
        run_job(job, lend(FakeEngine(interrupt_after=6)))
    kept = {p.name: p.read_bytes() for p in (job.output_dir / "users").iterdir()}
    assert 0 < len(kept) < 8
    second = FakeEngine()
    run_job(job, lend(second))
    assert_complete_run(job.output_dir, DATA / "Chameleons" / "test_leaderboard.json", 2)
    assert all((job.output_dir / "users" / n).read_bytes() == b for n, b in kept.items())
    assert len(second.requests) == 15 - sum(len(orjson.loads(b)["items"]) for b in kept.values())
    summary = load(job.output_dir / "inference_summary.json")
    assert summary["resumed_users"] == len(kept)
    # The interrupted session left no report: its files on disk are counted apart.
    unrecorded = 2 * sum(len(orjson.loads(b)["items"]) for b in kept.values())
    assert summary["samples_from_unrecorded_sessions"] == unrecorded
    assert summary["samples_generated"] == summary["total_samples"] - unrecorded
    assert summary["samples_discarded"] == 0
    assert (summary["samples_generated"] + summary["samples_discarded"]
            + summary["samples_from_unrecorded_sessions"]
            == summary["total_samples"] + summary["samples_discarded"])
    (session,) = summary["shards"][0]["sessions"]
    assert session["samples_generated"] == 2 * len(second.requests) == summary["samples_generated"]


def test_a_resume_counts_the_samples_it_replaced_as_discarded(tmp_path: Path) -> None:
    """One file torn, one missing an item: the resume regenerates both users; the summary
    counts what is on disk once and the first session's replaced samples apart."""
    job = job_for(tmp_path)
    run_job(job, lend(FakeEngine()))
    files = sorted((job.output_dir / "users").iterdir())
    torn, short = files[0], files[1]
    replaced = 2 * sum(len(load(p)["items"]) for p in (torn, short))
    doc = load(short)
    assert len(doc["items"]) > 1
    short.write_bytes(orjson.dumps({**doc, "items": doc["items"][:-1]}))
    torn.write_bytes(torn.read_bytes()[:40])
    second = FakeEngine()
    run_job(job, lend(second))
    summary = assert_complete_run(job.output_dir, DATA / "Chameleons" / "test_leaderboard.json", 2)
    assert 2 * len(second.requests) == replaced
    assert summary["samples_generated"] == summary["total_samples"]
    assert summary["samples_discarded"] == replaced
    assert summary["samples_from_unrecorded_sessions"] == 0
    first, again = summary["shards"][0]["sessions"]
    assert first["samples_generated"] == summary["total_samples"]
    assert again["samples_generated"] == replaced and again["resumed_users"] == len(files) - 2
    assert first["id"] != again["id"] and load(torn)["session"] == again["id"]
    # the totals stay the engine's: every sample generated, replaced ones included
    assert summary["shards"][0]["samples_generated"] == summary["total_samples"] + replaced


def test_resumed_samples_equal_an_uninterrupted_run(tmp_path: Path) -> None:
    """Per-request seeds depend on the item, not on what else is in flight."""
    whole = run_job(job_for(tmp_path, name="whole"), lend(FakeEngine()))
    job = job_for(tmp_path, name="cut")
    with pytest.raises(Interrupted):
        run_job(job, lend(FakeEngine(interrupt_after=5)))
    run_job(job, lend(FakeEngine()))
    assert load(whole / "test_leaderboard.json") == load(job.output_dir / "test_leaderboard.json")


@pytest.mark.slow
def test_prompts_built_by_worker_processes_make_the_same_run(tmp_path: Path) -> None:
    here = run_job(job_for(tmp_path, "prompt_workers=1", name="here"), lend(FakeEngine()))
    pool = run_job(job_for(tmp_path, "prompt_workers=2", name="pool"), lend(FakeEngine()))
    assert load(here / "test_leaderboard.json") == load(pool / "test_leaderboard.json")
    assert sorted(p.name for p in (pool / "users").iterdir()) == sorted(
        p.name for p in (here / "users").iterdir())


def test_resuming_a_finished_run_builds_no_prompt(tmp_path: Path, monkeypatch) -> None:
    job = job_for(tmp_path)
    run_job(job, lend(FakeEngine()))
    built = []
    original = prompt_module.PromptBuilder.build_user
    monkeypatch.setattr(prompt_module.PromptBuilder, "build_user",
                        lambda self, user: built.append(user) or original(self, user))
    started = []
    run_job(job, lambda job, adapters: started.append(1) or FakeEngine())
    assert built == [] and started == []


def test_first_request_reaches_the_engine_before_prompt_building_ends(tmp_path: Path,
                                                                      monkeypatch) -> None:
    original = prompt_module.PromptBuilder.build_user
    calls: list[float] = []

    def slow(self, user):
        calls.append(time.perf_counter())
        time.sleep(0.05)
        return original(self, user)

    monkeypatch.setattr(prompt_module.PromptBuilder, "build_user", slow)
    engine = FakeEngine()
    run_job(job_for(tmp_path, "prompt_workers=1"), lend(engine))  # in this process: patched
    assert len(calls) == 8 and engine.first_request_at < calls[-1]


def test_shards_fill_every_item_exactly_once(tmp_path: Path) -> None:
    for index in (0, 1):
        run_job(job_for(tmp_path, "shard.count=2", f"shard.index={index}"), lend(FakeEngine()))
    summary = assert_complete_run(tmp_path / "out", DATA / "Chameleons" / "test_leaderboard.json", 2)
    assert summary["num_shards"] == 2
    assert sum(s["samples_generated"] for s in summary["shards"]) == summary["total_samples"]


def test_a_failed_start_leaves_nothing_that_blocks_the_fixed_command(tmp_path: Path) -> None:
    from conftest import write_dataset
    from inference_core.data.loader import InputError

    folder = tmp_path / "data"
    write_dataset(folder, [], [])
    (folder / "test_leaderboard.json").write_text("[{")  # malformed
    job = job_for(tmp_path, "dataset=custom", f"dataset.path={folder}")
    with pytest.raises(InputError):
        run_job(job, lend(FakeEngine()))
    assert not (job.output_dir / "run.json").exists()


def test_dry_run_writes_every_prompt_and_claims_nothing(tmp_path: Path, tokenizer) -> None:
    engine = FakeEngine()
    out = run_job(job_for(tmp_path, "dry_run=true"), lend(engine))
    lines = [orjson.loads(line) for line in out.read_bytes().splitlines()]
    assert out.name == "prompts.jsonl" and len(lines) == 15 and engine.requests == []
    assert not (out.parent / "run.json").exists()
    first = lines[0]
    assert set(first) == {"user_hash", "location", "text", "prompt_tokens", "truncated"}
    assert len(tokenizer(first["text"], add_special_tokens=False)["input_ids"]) == \
        first["prompt_tokens"]


def test_a_handler_redraws_what_it_cannot_use_then_skips_it(tmp_path: Path) -> None:
    """MovieLens keeps ratings only: the fake engine's text is no rating, so every sample is
    drawn again, then the items are listed as skipped, never filled with a stand-in."""
    engine = FakeEngine(text=lambda seed, j: "no idea")
    job = job_for(tmp_path, "dataset=MovieLens", "max_users=1", "sampling.blank_retries=1",
                  "allow_skips=true", "evaluate=true")  # scoring a run with no sample at all
    run_job(job, lend(engine))
    summary = load(job.output_dir / "inference_summary.json")
    items = len({r.request_id for r in engine.requests})
    assert len(engine.requests) == 2 * items  # the first round and one redraw
    assert summary["num_data_items"] == 0 and len(summary["skipped_items"]) == items
    assert summary["unusable_samples"] == 2 * 2 * items
    assert load(job.output_dir / "metrics.json")["num_samples"] == 0


def test_tagged_answers_are_unwrapped_and_unclosed_ones_counted(tmp_path: Path) -> None:
    """Sample 0 ends on the closing tag (a stop string), sample 1 never closes its answer."""
    engine = FakeEngine(text=lambda seed, j: f"[ANSWER]\nline {j}\n",
                        stop_reason=lambda j: "[/ANSWER]" if j == 0 else None)
    job = job_for(tmp_path, "prompt=tagged")
    assert "[/ANSWER]" in job.sampling.stop and "\n" not in job.sampling.stop
    out = run_job(job, lend(engine))
    summary = load(out / "inference_summary.json")
    assert summary["answer_format_misses"] == summary["num_data_items"]
    user = load(next((out / "users").iterdir()))
    assert user["items"][0]["generated_samples"] == ["line 0", "line 1"]
    assert user["items"][0]["raw_samples"][0] == "[ANSWER]\nline 0\n"


def test_chat_api_requests_carry_the_messages_the_prompt_was_rendered_from(tmp_path: Path,
                                                                          tokenizer) -> None:
    engine = FakeEngine()
    job = job_for(tmp_path, "engine=openai", "engine.api=chat", "engine.model=m", "max_users=1",
                  "engine.base_url=http://127.0.0.1:9/v1")
    run_job(job, lend(engine))
    request = engine.requests[0]
    assert [m["role"] for m in request.messages] == ["system", "user"]
    rendered = tokenizer.apply_chat_template(list(request.messages), tokenize=False,
                                             add_generation_prompt=True)
    assert tokenizer(rendered, add_special_tokens=False)["input_ids"] == list(request.token_ids)


def test_a_job_round_trips_through_run_json(tmp_path: Path, tokenizer) -> None:
    """The report rebuilds prompts from run.json alone: the same ids as the run's own."""
    from inference_core.data.loader import load_dataset
    from inference_core.prompts.builder import build_prompts
    from inference_core.run.job import Job
    from inference_core.run.prompting import prompt_builder

    job = job_for(tmp_path, "prompt=tagged", "dataset=DMSC")
    again = Job.from_identity(orjson.loads(orjson.dumps(job.identity())), job.output_dir)
    assert again.identity() == job.identity()
    users = load_dataset("DMSC", job.dataset_path).users
    ids = [list(p.token_ids) for p in build_prompts(prompt_builder(job, tokenizer), users)[0]]
    assert ids == [list(p.token_ids)
                   for p in build_prompts(prompt_builder(again, tokenizer), users)[0]]


def test_an_endpoint_without_a_local_tokenizer_counts_conservatively(tmp_path: Path) -> None:
    from inference_core.config import ConfigError

    endpoint = ["engine=openai", "engine.model=m", "engine.base_url=http://127.0.0.1:9/v1",
                "engine.local_tokenizer=false"]
    with pytest.raises(ConfigError, match="engine.api=chat"):
        job_for(tmp_path, *endpoint)
    job = job_for(tmp_path, *endpoint, "engine.api=chat", "max_users=2")
    assert job.token_counts == "estimated"
    assert job.prompt_budget == int((job.max_model_len - job.sampling.max_tokens) * 0.8)
    out = run_job(job, lend(FakeEngine()))
    assert load(out / "inference_summary.json")["token_counts"] == "estimated"


def test_users_scored_while_generating_leave_nothing_to_score_after(tmp_path: Path,
                                                                    monkeypatch) -> None:
    """A large run scores finished users in worker processes during generation; the metrics
    after the run then score nothing, and equal what `evaluate` computes from the files."""
    from inference_core.evaluation import background, metrics
    from inference_core.evaluation.scoring import evaluate_run

    monkeypatch.setattr(background, "MIN_ITEMS", 0)  # this small run counts as large
    monkeypatch.setattr(background, "BATCH_ITEMS", 3)
    scored_after: list[int] = []
    real = metrics.score_items
    monkeypatch.setattr(metrics, "score_items", lambda items, language: (
        scored_after.append(len(items)) or real(items, language)))
    out = run_job(job_for(tmp_path, "evaluate=true"), lend(FakeEngine()))
    assert sum(scored_after) == 0  # the workers' own calls are in their processes
    during = load(out / "metrics.json")
    assert load(out / "shards" / "0-of-1.json")["scoring_wait_seconds"] >= 0
    assert set(load(out / "inference_summary.json")["after_run_seconds"]) == {"merge", "metrics"}
    assert evaluate_run(out) == during and sum(scored_after) > 0


def numeric_id_copy(tmp_path: Path) -> Path:
    """Chameleons with its first user's id an integer in both files, and one item of that user
    that is not an object (skipped, and listed under the id)."""
    import shutil

    folder = tmp_path / "Chameleons"
    shutil.copytree(DATA / "Chameleons", folder)
    test = load(folder / "test_leaderboard.json")
    train = load(folder / "train.json")
    old = test[0]["user_hash"]
    for record in test + train:
        if record.get("user_hash") == old:
            record["user_hash"] = 123
    test[0]["task"]["task_behavior_collections"][0]["data"].append(7)
    (folder / "test_leaderboard.json").write_bytes(orjson.dumps(test))
    (folder / "train.json").write_bytes(orjson.dumps(train))
    return folder


def test_a_numeric_id_keeps_its_type_in_every_file(tmp_path: Path) -> None:
    from inference_core.rundir.layout import safe_user_filename

    folder = numeric_id_copy(tmp_path)
    job = job_for(tmp_path, f"dataset.path={folder}", "allow_skips=true", "evaluate=true")
    run_job(job, lend(FakeEngine()))
    path = job.output_dir / "users" / safe_user_filename("123")
    user = load(path)
    assert user["user_hash"] == 123 and user["file"] == path.name
    summary = load(job.output_dir / "inference_summary.json")
    assert summary["skipped_items"] == [{"location": {"record": 0, "collection": 0, "item": 2},
                                         "user_hash": 123,
                                         "reason": "item is a int, not an object",
                                         "bad_input": True}]
    board = load(job.output_dir / "test_leaderboard.json")
    assert board[0]["user_hash"] == 123
    assert all(len(i["continuations"]) == 2
               for i in board[0]["task"]["task_behavior_collections"][0]["data"][:2])
    import pandas as pd  # parquet holds one type per column: the id as text there

    samples = pd.read_parquet(job.output_dir / "samples.parquet")
    assert set(samples[samples["record"] == 0]["user_hash"]) == {"123"}
    before = {p.name: p.read_bytes() for p in (job.output_dir / "users").iterdir()}

    again = FakeEngine()
    run_job(job, lend(again))
    assert again.requests == []
    assert {p.name: p.read_bytes() for p in (job.output_dir / "users").iterdir()} == before
    # A file written before ids kept their type holds the text: it still counts as finished.
    (path).write_bytes(orjson.dumps({**user, "user_hash": "123"}))
    third = FakeEngine()
    run_job(job, lend(third))
    assert third.requests == []
    assert load(job.output_dir / "test_leaderboard.json")[0]["user_hash"] == 123


def test_a_numeric_id_keeps_its_type_in_the_dry_run(tmp_path: Path) -> None:
    folder = numeric_id_copy(tmp_path)
    out = run_job(job_for(tmp_path, f"dataset.path={folder}", "dry_run=true"), lend(FakeEngine()))
    lines = [orjson.loads(line) for line in out.read_bytes().splitlines()]
    mine = [line for line in lines if line["location"]["record"] == 0]
    assert [line["user_hash"] for line in mine] == [123, 123] and "text" in mine[0]


def test_background_scoring_that_breaks_leaves_the_run_and_its_metrics_whole(
        tmp_path: Path, monkeypatch) -> None:
    from concurrent.futures.process import BrokenProcessPool

    from inference_core.evaluation import background
    from inference_core.evaluation.scoring import evaluate_run

    class BrokenPool:
        def __init__(self, *args, **kwargs) -> None:
            pass

        def submit(self, *args):
            raise BrokenProcessPool("a child process terminated abruptly")

        def shutdown(self, **kwargs) -> None:
            pass

    monkeypatch.setattr(background, "MIN_ITEMS", 0)
    monkeypatch.setattr(background, "BATCH_ITEMS", 1)
    monkeypatch.setattr(background, "ProcessPoolExecutor", BrokenPool)
    out = run_job(job_for(tmp_path, "evaluate=true"), lend(FakeEngine()))
    assert load(out / "metrics.json") == evaluate_run(out)


def test_report_shows_the_prompts_sent_while_the_run_keeps_none(tmp_path: Path,
                                                                monkeypatch) -> None:
    """Each finished user's prompts are decoded for the page as their file is written, and the
    run then forgets that user's prompt ids and samples (a long run's memory stays flat)."""
    from inference_core.run.collect import Collector
    from test_report import page_data

    released = []
    release = Collector.release

    def recording(self, user_hash):
        release(self, user_hash)
        released.extend(self.user_items(user_hash))

    monkeypatch.setattr(Collector, "release", recording)
    monkeypatch.setattr("inference_core.report.data.rebuild_prompts", None)  # no second build
    engine = FakeEngine()
    out = run_job(job_for(tmp_path, "report=true"), lend(engine))
    assert len(released) == len(engine.requests) == 15
    assert all(r.full and not r.texts and not r.prompt.token_ids for r in released)
    dry = [orjson.loads(line) for line in
           run_job(job_for(tmp_path, "dry_run=true", name="dry"), lend(engine)).read_bytes()
           .splitlines()]
    data = page_data((out / "report.html").read_text())
    shown = [data["prefixes"][c["pp"]] + c["ps"] for c in data["items"]]
    assert sorted(shown) == sorted(line["text"] for line in dry)
