"""What a likelihood run leaves (issue #36, outputs): likelihood.parquet, the summary's and
metrics.json's `likelihood` blocks, the leaderboard's likelihood columns with intervals and paired
tests, and the report page's cards worst predicted first. Run folders are made by the pipeline
with the fake engine (tests only: its log-probabilities are made up, the files are real)."""
from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import orjson
import pandas as pd
import pyarrow.parquet as pq
import pytest

from conftest import compose
from fake_engine import FakeEngine, lend
from inference_core.evaluation import leaderboard
from inference_core.evaluation.item_scores import load_item_scores
from inference_core.evaluation.leaderboard_rows import Bootstrap
from inference_core.likelihood.collect import NO_REFERENCE
from inference_core.run.job import prepare_jobs
from inference_core.run.pipeline import run_jobs
from inference_core.rundir.layout import read_user_files
from test_report import browse, page_data

SMALL = ["sampling.num_samples=2", "sampling.max_tokens=8"]
Key = tuple[str, int, int, int]


def run(root: Path, *overrides: str) -> Path:
    jobs = prepare_jobs(compose(f"output_dir={root}", *SMALL, *overrides))
    run_jobs(jobs, lend(FakeEngine()))
    return root


def load(path: Path) -> Any:
    return orjson.loads(path.read_bytes())


def user_figures(run_dir: Path) -> dict[Key, dict[str, Any]]:
    """Every item's likelihood figures as its user file holds them."""
    return {(u.key, it.location.record, it.location.collection, it.location.item):
            it.extra["likelihood"] for u in read_user_files(run_dir) for it in u.items}


def parquet_rows(run_dir: Path) -> tuple[dict[Key, dict[str, Any]], dict[Key, list[dict]]]:
    """likelihood.parquet's item rows by item, and its option rows per item in file order."""
    items: dict[Key, dict[str, Any]] = {}
    options: dict[Key, list[dict[str, Any]]] = {}
    for row in pq.read_table(run_dir / "likelihood.parquet").to_pylist():
        key = (row["user_hash"], row["record"], row["collection"], row["item"])
        if row["option"] is None:
            assert key not in items
            items[key] = row
        else:
            options.setdefault(key, []).append(row)
    return items, options


def mean(values: list[float]) -> float:
    return sum(values) / len(values)


@pytest.fixture(scope="module")
def chameleons(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Chameleons' own test file: 8 of its 15 items have a reference, 7 have none."""
    return run(tmp_path_factory.mktemp("lik") / "chameleons", "dataset=Chameleons",
               "mode=likelihood")


@pytest.fixture(scope="module")
def movielens(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return run(tmp_path_factory.mktemp("lik") / "movielens", "dataset=MovieLens",
               "dataset.holdout=last", "mode=likelihood")


def test_likelihood_parquet_holds_the_user_files_figures(chameleons: Path) -> None:
    figures = user_figures(chameleons)
    items, options = parquet_rows(chameleons)
    assert len(figures) == 15 and set(items) == set(figures) and not options
    for key, item_figures in figures.items():
        row = items[key]
        assert {k: row[k] for k in item_figures} == item_figures, key
        assert row["dataset"] == "Chameleons" and row["predicted"] is None
    scored = [f for f in figures.values() if f["scored"]]
    assert len(scored) == 8 and all(f["why"] == NO_REFERENCE for f in figures.values()
                                    if not f["scored"])


def test_summary_counts_no_samples_and_names_the_unscored(chameleons: Path) -> None:
    summary = load(chameleons / "inference_summary.json")
    assert summary["mode"] == "likelihood" and summary["num_data_items"] == 15
    assert (summary["num_samples_per_item"], summary["total_samples"],
            summary["samples_generated"], summary["samples_from_unrecorded_sessions"],
            summary["samples_discarded"]) == (0, 0, 0, 0, 0)
    assert summary["skipped_items"] == []
    figures = user_figures(chameleons)
    block = summary["likelihood"]
    unscored = {(u["user_hash"], u["location"]["record"], u["location"]["collection"],
                 u["location"]["item"]): u["why"] for u in block["unscored"]}
    assert unscored == {k: f["why"] for k, f in figures.items() if not f["scored"]}
    assert (block["scored_items"], block["unscored_items"]) == (8, 7)
    assert block["unscored_reasons"] == {NO_REFERENCE: 7}
    scored = [f for f in figures.values() if f["scored"]]
    assert block["merged_boundary_items"] == sum(f["merged_boundary"] for f in scored)
    assert block["target_tokens"] == sum(f["target_tokens"] for f in scored)
    assert block["loss"] == pytest.approx(sum(-f["logprob"] for f in scored)
                                          / block["target_tokens"])
    # No item was generated: the merged test file gets no empty `continuations`.
    records = load(chameleons / "test_leaderboard.json")
    assert not [it for r in records for c in r["task"]["task_behavior_collections"]
                for it in c["data"] if "continuations" in it]


def test_metrics_json_likelihood_block(chameleons: Path) -> None:
    metrics = load(chameleons / "metrics.json")
    assert metrics["mode"] == "likelihood" and "bleu_mean_of_n" not in metrics
    block = metrics["likelihood"]
    assert (block["items"], block["scored_items"], block["unscored_items"],
            block["items_with_options"]) == (15, 8, 7, 0)
    scored = [f for f in user_figures(chameleons).values() if f["scored"]]
    for name in ("nll_per_token", "bits_per_byte", "body_nll_per_token", "body_bits_per_byte"):
        assert block[name]["mean"] == pytest.approx(mean([f[name] for f in scored])), name
        assert block[name]["ci_low"] <= block[name]["mean"] <= block[name]["ci_high"]
        assert block[name]["items"] == 8
    assert block["greedy_match"]["mean"] == pytest.approx(mean([f["greedy_match"]
                                                                 for f in scored]))
    assert block["loss"]["mean"] == pytest.approx(load(chameleons / "inference_summary.json")[
        "likelihood"]["loss"])
    assert "option_accuracy" not in block  # no answer set: no option figures at all


def test_leaderboard_row_and_its_item_table(chameleons: Path) -> None:
    row, scores = leaderboard.build_row(chameleons, Bootstrap(200, 0))
    assert row.complete, row.reason
    assert (row.items, row.samples, row.n, row.sampling) == (15, 0, None, "none (likelihood)")
    assert row.estimate("loss") is not None and row.estimate("chrf_mean_of_n") is None
    assert scores is not None and (scores.frame["num_samples"] == 0).all()
    # Rebuilt from samples.parquet and likelihood.parquet, the table is the one the run wrote.
    cached = pd.read_parquet(chameleons / "item_scores.parquet")
    rebuilt = load_item_scores(chameleons, "en", recompute=True).frame
    pd.testing.assert_frame_equal(rebuilt, cached, check_dtype=False)


@pytest.mark.parametrize("dataset", ["MovieLens", "LovinkQuestionnaire"])
def test_answer_sets_give_an_option_prediction_per_item(dataset: str, movielens: Path,
                                                        tmp_path: Path) -> None:
    run_dir = movielens if dataset == "MovieLens" else run(
        tmp_path / "run", f"dataset={dataset}", "dataset.holdout=last", "mode=likelihood",
        "report=false")
    figures = user_figures(run_dir)
    items, options = parquet_rows(run_dir)
    with_options = {k: f for k, f in figures.items() if "options" in f}
    assert with_options and set(options) == set(with_options)
    if dataset == "MovieLens":
        assert len(with_options) == len(figures) == 5  # every rating item
    for key, f in with_options.items():
        assert f["predicted"] in [o["option"] for o in f["options"]]
        assert f["correct"] == (f["predicted"] == f["gold_option"])
        rows = options[key]
        assert [(r["option"], r["logprob"], r["target_tokens"], r["target_bytes"])
                for r in rows] == [(o["option"], o["logprob"], o["tokens"], o["bytes"])
                                   for o in f["options"]]
        assert rows[0]["nll_per_token"] == pytest.approx(-rows[0]["logprob"]
                                                         / rows[0]["target_tokens"])
        assert sum(r["option_probability"] for r in rows) == pytest.approx(1.0)
        assert items[key]["predicted"] == f["predicted"]
    block = load(run_dir / "metrics.json")["likelihood"]
    assert block["items_with_options"] == len(with_options)
    graded = [f for f in with_options.values() if f["correct"] is not None]
    assert block["option_accuracy"]["mean"] == pytest.approx(mean([f["correct"]
                                                                   for f in graded]))
    ordered = [f for f in graded if f["abs_error"] is not None]
    assert ordered, "no ordered answer set to take an error of"
    assert block["option_mae"]["mean"] == pytest.approx(mean([f["abs_error"] for f in ordered]))
    assert block["option_expected_mae"]["mean"] == pytest.approx(
        mean([f["expected_abs_error"] for f in ordered]))


def card_order(dom: str) -> list[tuple[str, str]]:
    """(user id, item location) of each card, as the page shows them."""
    return re.findall(r'<code class="uid">(.*?)</code><span class="loc">item (.*?)</span>', dom)


@pytest.mark.slow
def test_report_lists_the_worst_predicted_first(chameleons: Path, movielens: Path) -> None:
    for run_dir in (chameleons, movielens):
        data = page_data((run_dir / "report.html").read_text())
        cards = [data["items"][k] for k in data["order"]]
        assert all("lk" in c for c in cards)
        # Each scored item shows the prompt it was scored after (the run hands the page none
        # for an unscored one).
        assert all(c["pp"] is not None for c in cards if c["lk"]["scored"])
        keys = [(not c["lk"]["scored"], c["lk"].get("correct") is not False,
                 -c["lk"].get("body_nll_per_token", -math.inf)) for c in cards]
        assert keys == sorted(keys)
        dom = browse(run_dir / "report.html", "--dump-dom")
        shown = [(data["users"][c["u"]]["id"], c["loc"]) for c in cards]
        assert card_order(dom) == shown
        assert card_order(browse(run_dir / "report.html", "--dump-dom",
                                 fragment="order=file")) == sorted(
            shown, key=lambda s: tuple(map(int, s[1].split("/"))))
    data = page_data((movielens / "report.html").read_text())
    worst = data["items"][data["order"][0]]
    first = browse(movielens / "report.html", "--dump-dom").split('<article class="card">')[1]
    assert worst["lk"]["correct"] is False and "wrong option" in first
    assert f"predicted {worst['lk']['predicted']} · gold {worst['lk']['gold_option']}" in first
    assert worst["ref"] in first and "answer NLL/token" in first and "full prompt (" in first
    dom = browse(chameleons / "report.html", "--dump-dom")
    assert "unscored: " + NO_REFERENCE in dom.split('<article class="card">')[-1]


@pytest.mark.slow
def test_seven_ablations_scored_in_one_start_are_seven_leaderboard_rows(tmp_path: Path,
                                                                        ) -> None:
    engine, starts = FakeEngine(), []
    jobs = prepare_jobs(compose(f"output_dir={tmp_path}/runs/${{ablation.name}}", *SMALL,
                                "dataset=DMSC", "dataset.holdout=last", "mode=likelihood",
                                "ablations=all", "report=false"))
    run_jobs(jobs, lambda job, adapters: starts.append(job) or engine)
    assert len(jobs) == 7 and len(starts) == 1 and engine.scored and not engine.requests
    summaries = [load(j.output_dir / "inference_summary.json") for j in jobs]
    assert len({s["engine_session"]["id"] for s in summaries}) == 1
    out = tmp_path / "board"
    assert leaderboard.main([str(tmp_path / "runs"), "--out", str(out), "--resamples", "200",
                             "--baseline", "profile_only", "--no-reports"]) == 0
    rows = load(out / "leaderboard.json")["rows"]
    assert len(rows) == 7 and all(r["status"] == "complete" for r in rows)
    for row in rows:
        for name in ("loss", "body_nll_per_token", "bits_per_byte", "greedy_match"):
            assert row[f"{name}_ci_low"] <= row[name] <= row[f"{name}_ci_high"], name
        metrics = load(Path(row["run_dir"]) / "metrics.json")["likelihood"]
        assert row["loss"] == pytest.approx(metrics["loss"]["mean"])
        if row["ablation"] == "profile_only":
            continue
        assert row["shared_items"] == 8 and row["loss_diff_ci_low"] <= row["loss_diff"]
        assert 0 < row["loss_p"] <= 1 and row["loss_diff"] == pytest.approx(
            row["loss"] - next(r["loss"] for r in rows if r["ablation"] == "profile_only"))
    table = (out / "leaderboard.md").read_text()
    assert "## Paired with the baseline (ablation profile_only)" in table
    assert "lower is better for" in table and "| loss |" in table
    header = (out / "leaderboard.csv").read_text().splitlines()[0].split(",")
    assert {"loss", "loss_ci_low", "loss_diff", "loss_p", "option_mae"} - set(header) == {
        "option_mae"}  # DMSC has no answer set


def test_both_mode_keeps_the_generation_outputs_and_adds_the_figures(tmp_path: Path) -> None:
    run_dir = run(tmp_path / "both", "dataset=DMSC", "dataset.holdout=last", "mode=both",
                  "report=false")
    summary = load(run_dir / "inference_summary.json")
    assert summary["mode"] == "both" and summary["total_samples"] == 8 * 2
    assert summary["samples_generated"] == 16 and summary["likelihood"]["scored_items"] == 8
    records = load(run_dir / "test_leaderboard.json")
    assert sum(len(it.get("continuations", ())) for r in records
               for c in r["task"]["task_behavior_collections"] for it in c["data"]) == 16
    metrics = load(run_dir / "metrics.json")
    assert metrics["num_samples"] == 16 and metrics["chrf_mean_of_n"] is not None
    assert metrics["likelihood"]["scored_items"] == 8
    scores = pd.read_parquet(run_dir / "item_scores.parquet")
    assert len(scores) == 8 and (scores["num_samples"] == 2).all()
    assert scores[["chrf_mean_of_n", "loss", "loss_weight"]].notna().all().all()


def test_the_leaderboard_accepts_a_summary_without_samples() -> None:
    summary = {"mode": "likelihood", "num_data_items": 3, "num_samples_per_item": 0,
               "sampling_params": {"num_samples": 2}, "likelihood": {"scored_items": 2}}
    assert leaderboard.summary_problems(summary) == []
    nothing = {**summary, "likelihood": {"scored_items": 0}}
    assert leaderboard.summary_problems(nothing) == [
        "empty: no item could be scored (reasons in inference_summary.json)"]
