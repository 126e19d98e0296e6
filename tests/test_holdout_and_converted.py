"""holdout=last scoring, and converted corpora running through the pipeline unchanged."""
from __future__ import annotations

import pytest

from conftest import DATA, compose, dialogue_item, user_record, write_dataset
from inference_core.data.convert import convert_cornell, convert_dmsc
from inference_core.data.loader import load_dataset
from inference_core.run.job import prepare_job
from inference_core.run.pipeline import run_job
from inference_core.prompts.builder import Ablation, PromptBuilder, PromptStyle, build_prompts
from test_convert import CORNELL, DMSC
from test_vllm_pipeline import assert_complete_run, load

TINY = ["sampling.max_tokens=8", "sampling.num_samples=2"]


def test_holdout_moves_exactly_the_newest_item_and_never_leaks_it(tmp_path, tokenizer):
    train = [user_record("a", "A", [dialogue_item("SECRET-NEWEST", ("R", "q"), name="A", timestamp="2003"),
                                    dialogue_item("older line", ("R", "q"), name="A", timestamp="2001"),
                                    dialogue_item("middle line", ("R", "q"), name="A", timestamp="2002")]),
             user_record("b", "B", [dialogue_item("only line", ("R", "q"), name="B")])]
    folder = write_dataset(tmp_path, train, [])
    data = load_dataset("x", folder, holdout="last")
    a, b = data.users
    assert [i.reference for i in a.items] == ["SECRET-NEWEST"] and len(b.items) == 1
    assert [h.text for h in a.history] == ["older line", "middle line"] and b.history == ()
    assert len(data.derived_test) == 2
    style = PromptStyle("Reply.", "Past lines", 1)
    builder = PromptBuilder(tokenizer, style, Ablation("all", True, True, True), 1500)
    prompts, _ = build_prompts(builder, data.users)
    assert all("SECRET-NEWEST" not in tokenizer.decode(p.token_ids) for p in prompts)


@pytest.mark.engine
def test_holdout_run_is_scored(vllm_engine, tmp_path):
    out = tmp_path / "out"
    run_job(prepare_job(compose("dataset=DMSC", "dataset.holdout=last", f"output_dir={out}",
                                *TINY)), lambda job, adapters: vllm_engine)
    metrics = load(out / "metrics.json")
    users = len({r["user_hash"] for r in load(DATA / "DMSC" / "train.json")})
    assert metrics["num_scored_items"] == users and metrics["chrf_mean_of_n"] is not None
    assert_complete_run(out, out / "holdout_test.json", 2)


@pytest.mark.engine
def test_converted_corpora_run_through_the_pipeline(vllm_engine, tmp_path):
    convert_cornell(CORNELL, tmp_path / "cornell")
    convert_dmsc(DMSC, tmp_path / "dmsc")
    for name in ("cornell", "dmsc"):
        out = tmp_path / f"out-{name}"
        run_job(prepare_job(compose("dataset=custom", f"dataset.path={tmp_path / name}",
                                    f"output_dir={out}", *TINY)), lambda job, adapters: vllm_engine)
        assert_complete_run(out, tmp_path / name / "test_leaderboard.json", 2)
        # references.json beside the converted test file is what gets scored
        assert load(out / "metrics.json")["num_scored_items"] > 0
