"""evaluate_run and the leaderboard builder on tiny fabricated run folders (no engine)."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pandas as pd
import pytest

from inference_core.evaluation import leaderboard
from inference_core.evaluation import scoring as evaluate
from inference_core.evaluation.scoring import evaluate_run
from inference_core.evaluation.leaderboard import collect_rows
from inference_core.evaluation.leaderboard_output import write_leaderboard

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def make_run(root: Path, name: str, dataset: str, model: str, ablation: str,
             users: dict[str, list[dict[str, Any]]], samples_per_s: float,
             checkpoint: str | None = None, **extra: Any) -> Path:
    """A run folder shaped like the pipeline's: summary plus users/<name>.json."""
    run_dir = root / name
    (run_dir / "users").mkdir(parents=True)
    total = sum(len(it["generated_samples"]) for items in users.values() for it in items)
    summary = {
        "checkpoint": checkpoint or f"/models/{model}", "model_name": model, "dataset": dataset,
        "sampling_params": {"num_samples": 2, "temperature": 1.0, "top_p": 0.9, "top_k": 50,
                            "max_tokens": 32, "seed": 0},
        "ablation_config": ablation, "engine": "vllm", "num_users": len(users),
        "num_data_items": sum(len(v) for v in users.values()), "num_samples_per_item": 2,
        "total_samples": total, "prompt_tokens": 100, "generated_tokens": 50,
        "inference_time_seconds": 2.0, "throughput_samples_per_sec": samples_per_s,
        "output_tokens_per_sec": 25.0, "timestamp": "2025-01-01T00:00:00", **extra,
    }
    (run_dir / "inference_summary.json").write_bytes(orjson.dumps(summary))
    for user_hash, items in users.items():
        doc = {"user_hash": user_hash, "profile_name": None, "dataset": dataset,
               "ablation": ablation, "items": items}
        (run_dir / "users" / f"{user_hash}.json").write_bytes(orjson.dumps(doc))
    return run_dir


def test_rows_of_one_engine_start_show_the_starts_rate_labelled(tmp_path: Path) -> None:
    """Each job of a shared start has its own span, which overlaps the others': the speed
    column is the session's rate, and says so; a run of its own keeps its own."""
    root = tmp_path / "outputs"
    jobs = [str(root / a) for a in ("hist", "none", "ctx")]
    session = {"id": "s1", "jobs": jobs, "load_seconds": 30.0, "inference_time_seconds": 157.0,
               "samples_generated": 140, "throughput_samples_per_sec": 0.89,
               "output_tokens_per_sec": 20.5}
    for name, ablation in (("hist", "profile_and_history"), ("none", "no_profile"),
                           ("ctx", "context_only")):
        make_run(root, name, "Chameleons", "llama-a", ablation,
                 {"u1": [item(["a b", "c d"], "a b")]}, 0.127, engine_session=session)
    make_run(root, "alone", "DMSC", "qwen-b", "profile_only", {"u1": [item(["x", "y"], "x")]},
             4.0, engine_session={"id": "s2", "jobs": [str(root / "alone")]})
    rows = {r.ablation: r for r in collect_rows([root])}
    for ablation in ("profile_and_history", "no_profile", "context_only"):
        assert rows[ablation].samples_per_s == 0.89 and rows[ablation].output_tokens_per_s == 20.5
        assert rows[ablation].speed_of == "shared start (3 jobs)"
    assert rows["profile_only"].samples_per_s == 4.0 and rows["profile_only"].speed_of == "own run"
    write_leaderboard(list(rows.values()), tmp_path / "board")
    assert "| 0.89 | 20.50 | shared start (3 jobs) |" in (tmp_path / "board" / "leaderboard.md"
                                                          ).read_text()


def test_rows_not_seeded_per_request_are_named(tmp_path: Path) -> None:
    root = tmp_path / "outputs"
    make_run(root, "served", "DMSC", "api", "profile_only", {"u1": [item(["x", "y"], "x")]}, 4.0,
             per_request_seeds=False, engine="openai")
    make_run(root, "local", "DMSC", "qwen", "profile_only", {"u1": [item(["x", "y"], "x")]}, 4.0,
             per_request_seeds=True)
    rows = collect_rows([root])
    write_leaderboard(rows, tmp_path / "board")
    md = (tmp_path / "board" / "leaderboard.md").read_text()
    assert "1 rows were not seeded per request" in md and str(root / "served") in md
    assert str(root / "local") not in md.split("| dataset |")[0]
    from inference_core.report.leaderboard_page import write_leaderboard_html

    page = write_leaderboard_html(rows, tmp_path / "board")
    assert "1 rows were not seeded per request" in page.read_text()


def item(samples: list[str], reference: str | None = None, record: int = 0) -> dict[str, Any]:
    out: dict[str, Any] = {
        "location": {"record": record, "collection": 0, "item": 1}, "prompt_tokens": 80,
        "truncated": False, "generated_samples": samples,
        "finish_reasons": ["stop"] * (len(samples) - 1) + ["length"],
        "output_tokens": [len(s) for s in samples],
    }
    if reference is not None:
        out["reference"] = reference
    return out


@pytest.fixture
def runs(tmp_path: Path) -> Path:
    root = tmp_path / "outputs"
    make_run(root / "b", "dmsc-run", "DMSC", "qwen-b", "profile_and_history",
             {"u1": [item(["这部电影非常好看", "一般"], "这部电影非常好看")],
              "u2": [item(["剧情很好", "很好很好"], "剧情不错", record=1)]}, 4.0)
    make_run(root / "a", "cham-hist", "Chameleons", "llama-a", "profile_and_history",
             {"u1": [item(["the cat sat on the mat", "a dog ran"], "the cat sat on the mat")]}, 2.5)
    make_run(root / "a", "cham-none", "Chameleons", "llama-a", "no_profile",
             {"u1": [item(["a b a", "a b"])]}, 3.0)  # no references at all
    return root


def test_evaluate_run_writes_metrics_and_one_parquet_row_per_sample(runs: Path) -> None:
    import datasets

    run_dir = runs / "b" / "dmsc-run"
    metrics = evaluate_run(run_dir)
    assert metrics == orjson.loads((run_dir / "metrics.json").read_bytes())
    assert metrics["num_users"] == 2 and metrics["num_scored_items"] == 2
    assert metrics["bleu_tokenize"] == "zh" and metrics["num_length_finishes"] == 2
    table = datasets.Dataset.from_parquet(str(run_dir / "samples.parquet"))
    assert table.num_rows == 4
    assert list(table.column_names) == list(evaluate.SAMPLE_COLUMNS)
    df = table.to_pandas()
    first = df.iloc[0].to_dict()
    assert first["user_hash"] == "u1" and first["text"] == "这部电影非常好看"
    assert first["reference"] == "这部电影非常好看" and first["finish_reason"] == "stop"
    assert first["sample_index"] == 0 and first["prompt_tokens"] == 80
    assert list(df["record"]) == [0, 0, 1, 1]
    assert not [p for p in run_dir.iterdir() if p.name.endswith(".tmp")]  # no temp leftovers


def test_evaluate_run_leaves_the_leaderboard_the_item_scores_it_would_compute(runs: Path) -> None:
    """evaluate_run writes item_scores.parquet from the scores it computed (or was handed while
    the run generated); the leaderboard's own scoring of samples.parquet must agree exactly."""
    import pandas as pd

    from inference_core.evaluation.background import KnownScores, fingerprint
    from inference_core.evaluation.item_scores import load_item_scores, score_samples
    from inference_core.evaluation.metrics import ItemInput, score_item

    run_dir = runs / "b" / "dmsc-run"
    first = ItemInput(("这部电影非常好看", "一般"), "这部电影非常好看")
    stale = ItemInput(("剧情很好",), "剧情不错")  # not what u2's file holds: scored again
    known = KnownScores("zh", {("u1", "0/0/1"): (fingerprint(first), score_item(first, "zh")),
                               ("u2", "1/0/1"): (fingerprint(stale), score_item(stale, "zh"))})
    assert evaluate_run(run_dir, known=known) == evaluate_run(runs / "b" / "dmsc-run")
    evaluate_run(run_dir, known=known)
    cached = load_item_scores(run_dir, "zh")  # fresh: read, not scored again
    fresh = score_samples(pd.read_parquet(run_dir / "samples.parquet"), "zh")
    pd.testing.assert_frame_equal(cached.frame, fresh.frame)
    assert cached.metrics == fresh.metrics


def test_item_scores_table_fills_a_metric_first_seen_in_a_later_item_with_nan() -> None:
    """Rows come in one at a time: an item without a reference has no BLEU, and the ratings
    scorer's columns appear with the first readable rating; both are NaN above, typed float."""
    from inference_core.evaluation.item_scores import item_scores_frame
    from inference_core.evaluation.metrics import ItemInput, score_item

    items = [ItemInput(("5",)), ItemInput(("no rating here",), "4"), ItemInput(("4", "3"), "4")]
    entries = [(("u", 0, 0, n), item, score_item(item, "en")) for n, item in enumerate(items)]
    for order in (entries, entries[::-1]):  # first seen in the last row, then in the first
        table = item_scores_frame(order, "rating")
        frame = table.frame
        assert list(frame["item"]) == [0, 1, 2] and list(frame["num_samples"]) == [1, 1, 2]
        assert {"bleu_mean_of_n", "rating_mae"} <= set(table.metrics)
        assert table.metrics[-2:] == ("distinct_1", "distinct_2")
        assert frame["bleu_mean_of_n"].isna().tolist() == [True, False, False]
        assert frame["rating_mae"].isna().tolist() == [True, True, False]
        assert frame["rating_mae"].iloc[2] == 0.5 and frame["rating_mae_weight"].iloc[2] == 2.0
        assert {frame[c].dtype for c in table.metrics} == {np.dtype("float64")}


def test_parquet_reference_column_is_null_string_without_references(runs: Path) -> None:
    import pandas as pd

    run_dir = runs / "a" / "cham-none"
    metrics = evaluate_run(run_dir)
    assert metrics["num_scored_items"] == 0 and metrics["chrf_mean_of_n"] is None
    df = pd.read_parquet(run_dir / "samples.parquet")
    assert len(df) == 2 and df["reference"].isna().all()
    assert df["profile_name"].isna().all()


def test_evaluate_cli(runs: Path, tmp_path: Path) -> None:
    run_dir = runs / "a" / "cham-hist"
    assert evaluate.main([str(run_dir)]) == 0
    assert (run_dir / "metrics.json").is_file() and (run_dir / "samples.parquet").is_file()
    with pytest.raises(SystemExit) as missing:  # exit-code contract: bad input is 2, one line
        evaluate.main([str(tmp_path / "nope")])
    assert missing.value.code == 2


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


def test_leaderboard_rows_sorted_and_metrics_computed(runs: Path, tmp_path: Path) -> None:
    out = tmp_path / "board"
    assert leaderboard.main([str(runs), "--out", str(out)]) == 0
    for name in ("dmsc-run", "cham-hist", "cham-none"):  # computed because they were missing
        assert next(runs.rglob(name)).joinpath("metrics.json").is_file()

    rows = read_csv(out / "leaderboard.csv")
    assert [(r["dataset"], r["model"], r["ablation"]) for r in rows] == [
        ("Chameleons", "llama-a", "no_profile"),
        ("Chameleons", "llama-a", "profile_and_history"),
        ("DMSC", "qwen-b", "profile_and_history"),
    ]
    none, hist, dmsc = rows
    assert none["chrf_mean_of_n"] == "" and float(none["distinct_1"]) == pytest.approx(0.4)
    assert float(hist["rouge_l_best_of_n"]) == pytest.approx(100)
    assert float(hist["rouge_l_mean_of_n"]) == pytest.approx(50)
    assert dmsc["users"] == "2" and dmsc["samples"] == "4" and dmsc["engine"] == "vllm"
    assert float(dmsc["samples_per_s"]) == 4.0
    # by hand, LCS over characters: u1 samples 100 and 0; u2 剧情很好 vs 剧情不错 = 2/4 -> 50, and 0
    assert float(dmsc["rouge_l_best_of_n"]) == pytest.approx((100 + 50) / 2)
    assert float(dmsc["rouge_l_mean_of_n"]) == pytest.approx((50 + 25) / 2)

    md = (out / "leaderboard.md").read_text()
    assert "95% intervals: percentile bootstrap over users" in md and "1000 resamples, seed 0" in md
    lines = [ln for ln in md.splitlines() if ln.startswith("| ")]
    header = ("| dataset | model | ablation | engine | checkpoint | sampling | n | items | users "
              "| samples | samples/s | output tok/s | speed of | chars | bleu mean-of-n "
              "| bleu best-of-n |")
    assert lines[0].startswith(header) and lines[0].endswith("| distinct_1 | distinct_2 | run |")
    assert lines[1].startswith(
        "| Chameleons | llama-a | no_profile | vllm | /models/llama-a "
        "| T=1.0 p=0.9 k=50 n=2 max=32 | 2 | 1 | 1 | 2 | 3.00 | 25.00 | own run | 4.0 | - |"
    )  # chars: (5 + 3) / 2; one user: no interval, so the mean alone
    assert lines[1].endswith(f"| 0.400 | 0.667 | {next(runs.rglob('cham-none')).resolve()} |")
    assert lines[2].startswith("| Chameleons | llama-a | profile_and_history |")
    assert lines[3].startswith("| DMSC | qwen-b | profile_and_history | vllm | /models/qwen-b |")
    assert "| 75.00 [50.00, 100.00] |" in lines[3]  # rouge_l best-of-n over 2 users, 100 and 50
    assert float(dmsc["rouge_l_best_of_n_ci_low"]) == pytest.approx(50)
    assert float(dmsc["rouge_l_best_of_n_ci_high"]) == pytest.approx(100)
    assert dmsc["status"] == "complete" and dmsc["ci_resamples"] == "1000"


def test_leaderboard_png_opens(runs: Path, tmp_path: Path) -> None:
    from PIL import Image

    paths = write_leaderboard(collect_rows([runs]), tmp_path / "board")
    data = paths["png"].read_bytes()
    assert data.startswith(PNG_MAGIC)
    with Image.open(paths["png"]) as img:
        img.verify()
    import matplotlib.image as mpimg

    pixels = mpimg.imread(paths["png"])
    assert pixels.shape[0] > 100 and pixels.shape[1] > 100
    assert not [p for p in paths["png"].parent.iterdir() if p.name.endswith(".tmp")]


def test_existing_metrics_and_item_scores_are_reused(runs: Path) -> None:
    run_dir = runs / "a" / "cham-none"
    metrics = evaluate_run(run_dir)
    metrics["mean_chars"] = 0.123  # a marker: reused means not recomputed
    (run_dir / "metrics.json").write_bytes(orjson.dumps(metrics))
    rows = {r.ablation: r for r in collect_rows([runs / "a"])}
    assert rows["no_profile"].mean_chars == 0.123
    assert (run_dir / "item_scores.parquet").is_file()
    scores = pd.read_parquet(run_dir / "item_scores.parquet")
    scores["distinct_1"] = 0.5  # the per-item cache is reused too while it is fresh
    scores.to_parquet(run_dir / "item_scores.parquet", index=False)
    assert collect_rows([run_dir])[0].estimate("distinct_1").mean == 0.5
    rows = {r.ablation: r for r in collect_rows([runs / "a"], recompute=True)}
    assert rows["no_profile"].mean_chars == pytest.approx(4.0)
    assert rows["no_profile"].estimate("distinct_1").mean == pytest.approx(0.4)


def test_empty_root_still_writes_files(tmp_path: Path) -> None:
    paths = write_leaderboard(collect_rows([tmp_path]), tmp_path / "board")
    assert paths["png"].read_bytes().startswith(PNG_MAGIC)
    assert read_csv(paths["csv"]) == []


# --- several checkpoints, incomplete runs, paired comparisons ---------------------------------

REFERENCE = "the quick brown fox jumps over the lazy dog"


def users_of(samples: list[str], num_users: int = 8, items_per_user: int = 2
             ) -> dict[str, list[dict[str, Any]]]:
    """num_users users with items_per_user referenced items each, all with the same samples."""
    return {f"u{u}": [item(list(samples), REFERENCE, record=u * items_per_user + k)
                      for k in range(items_per_user)] for u in range(num_users)}


@pytest.fixture
def checkpoints(tmp_path: Path) -> Path:
    """Base, fine-tuned and an identical copy of base over one dataset, plus broken runs."""
    root = tmp_path / "outputs"
    worse = ["a zebra sat", "lions roar loudly"]
    make_run(root / "base", "hist", "Chameleons", "base", "history_only", users_of(worse), 2.0,
             checkpoint="/ckpt/base")
    make_run(root / "tuned", "hist", "Chameleons", "tuned", "history_only",
             users_of([REFERENCE, REFERENCE]), 2.0, checkpoint="/ckpt/tuned")
    make_run(root / "copy", "hist", "Chameleons", "copy", "history_only", users_of(worse), 2.0,
             checkpoint="/ckpt/copy")
    make_run(root / "few", "hist", "Chameleons", "few", "history_only",
             users_of([REFERENCE, "a zebra"], num_users=5), 2.0, checkpoint="/ckpt/few")
    # crashed: run.json and one user file, no summary
    crashed = root / "tuned" / "crashed"
    (crashed / "users").mkdir(parents=True)
    (crashed / "run.json").write_bytes(orjson.dumps(
        {"checkpoint": "/ckpt/tuned", "model_name": "tuned", "dataset": "Chameleons",
         "ablation_config": "no_profile", "sampling_params": {"num_samples": 2}}))
    (crashed / "users" / "u0.json").write_bytes(orjson.dumps({"user_hash": "u0", "items": []}))
    make_run(root / "tuned", "skipped", "Chameleons", "tuned", "profile_only",
             users_of(worse), 2.0, checkpoint="/ckpt/tuned",
             skipped_items=[{"location": None, "user_hash": "u9", "reason": "blank samples"}])
    make_run(root / "tuned", "short", "Chameleons", "tuned", "context_only",
             users_of(worse), 2.0, checkpoint="/ckpt/tuned", num_data_items=40)
    return root


def test_checkpoints_side_by_side_and_incomplete_runs_without_numbers(
        checkpoints: Path, tmp_path: Path) -> None:
    out = tmp_path / "board"
    roots = [checkpoints / "base", checkpoints / "tuned"]  # one root per checkpoint
    assert leaderboard.main([*map(str, roots), "--out", str(out), "--no-reports"]) == 0
    rows = read_csv(out / "leaderboard.csv")
    complete = [r for r in rows if r["status"] == "complete"]
    assert [(r["model"], r["checkpoint"]) for r in complete] == [
        ("base", "/ckpt/base"), ("tuned", "/ckpt/tuned")]
    base, tuned = complete
    assert base["sampling"] == tuned["sampling"] == "T=1.0 p=0.9 k=50 n=2 max=32"
    assert base["items"] == tuned["items"] == "16" and base["n"] == "2" and base["users"] == "8"
    assert float(tuned["rouge_l_best_of_n"]) == pytest.approx(100)
    assert float(tuned["rouge_l_best_of_n_ci_low"]) == pytest.approx(100)

    incomplete = {Path(r["run_dir"]).name: r for r in rows if r["status"] == "incomplete"}
    assert set(incomplete) == {"crashed", "skipped", "short"}
    assert "no inference_summary.json" in incomplete["crashed"]["reason"]
    assert incomplete["crashed"]["ablation"] == "no_profile"  # named from run.json
    assert "1 items have no generations" in incomplete["skipped"]["reason"]
    assert "16 items, the summary 40" in incomplete["short"]["reason"]
    metric_cols = [c for c in rows[0] if c.endswith(("_of_n", "_ci_low", "_ci_high"))
                   or c.startswith("distinct")]
    for row in incomplete.values():  # never zeros: no number at all
        assert all(row[c] == "" for c in metric_cols) and row["items"] == ""

    md = (out / "leaderboard.md").read_text()
    table, _, rest = md.partition("## Incomplete runs")
    assert "/ckpt/base" in table and "/ckpt/tuned" in table and "crashed" not in table
    assert "crashed" in rest and "16 items, the summary 40" in rest
    html = (out / "leaderboard.html").read_text()
    assert html.count("<strong>incomplete</strong>") == 3


def paired_rows(root: Path, baseline: str, tmp_path: Path) -> dict[str, dict[str, str]]:
    out = tmp_path / "paired"
    assert leaderboard.main([str(root), "--out", str(out), "--baseline", baseline,
                             "--no-reports", "--resamples", "2000"]) == 0
    return {r["model"]: r for r in read_csv(out / "leaderboard.csv") if r["status"] == "complete"}


def test_paired_with_a_checkpoint_baseline(checkpoints: Path, tmp_path: Path) -> None:
    rows = paired_rows(checkpoints, "/ckpt/base", tmp_path)
    copy, tuned, few = rows["copy"], rows["tuned"], rows["few"]
    assert float(copy["rouge_l_best_of_n_diff"]) == 0 and float(copy["rouge_l_best_of_n_p"]) == 1
    assert copy["pair_note"] == "" and copy["shared_items"] == "16"
    assert float(tuned["rouge_l_best_of_n_diff"]) > 50
    assert float(tuned["rouge_l_best_of_n_p"]) < 0.05  # 8 users all better: p ~ 2/2^8
    assert float(tuned["rouge_l_best_of_n_diff_ci_low"]) > 0
    assert few["shared_items"] == "10" and "compared on the 10 shared items" in few["pair_note"]
    assert rows["base"]["baseline"] == "checkpoint /ckpt/base"
    md = (tmp_path / "paired" / "leaderboard.md").read_text()
    assert "## Paired with the baseline (checkpoint /ckpt/base)" in md
    assert "| baseline |" in md and "item sets differ" in md
    html = (tmp_path / "paired" / "leaderboard.html").read_text()
    assert 'id="paired"' in html and "item sets differ" in html


def test_paired_with_a_run_folder_or_an_ablation(checkpoints: Path, tmp_path: Path) -> None:
    by_run = paired_rows(checkpoints / "base", str(checkpoints / "base" / "hist"), tmp_path)
    assert by_run["base"]["baseline"] == "run hist"
    make_run(checkpoints / "base", "none", "Chameleons", "base", "no_profile",
             users_of(["a zebra sat", "lions roar loudly"]), 2.0, checkpoint="/ckpt/base")
    out = tmp_path / "abl"
    assert leaderboard.main([str(checkpoints / "base"), "--out", str(out), "--no-reports",
                             "--baseline", "no_profile"]) == 0
    rows = {r["ablation"]: r for r in read_csv(out / "leaderboard.csv")}
    assert float(rows["history_only"]["chrf_mean_of_n_diff"]) == 0  # same samples
    assert rows["history_only"]["baseline_run_dir"].endswith("none")


def test_unknown_baseline_is_a_clear_error(checkpoints: Path, tmp_path: Path,
                                           caplog: pytest.LogCaptureFixture) -> None:
    assert leaderboard.main([str(checkpoints), "--out", str(tmp_path / "x"), "--no-reports",
                             "--baseline", "nope"]) == 2
    assert "--baseline nope: no run folder, ablation, model name or checkpoint" in caplog.text


class _Tables(HTMLParser):
    """The sortable tables of leaderboard.html: header columns and each row's sort keys."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: list[dict[str, Any]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "table" and "board" in (a.get("class") or ""):
            self.tables.append({"id": a.get("id"), "headers": [], "rows": []})
        elif tag == "th" and self.tables:
            col = a.get("data-col")
            self.tables[-1]["headers"].append(col and {"col": col, "type": a.get("data-type")})
        elif tag == "tr" and self.tables and self.tables[-1]["headers"]:
            self.tables[-1]["rows"].append([])
        elif tag == "td" and self.tables:
            self.tables[-1]["rows"][-1].append(a.get("data-sort"))


def test_leaderboard_js_sorts_both_tables(checkpoints: Path, tmp_path: Path) -> None:
    """The page's script on a minimal DOM under node: #sort= on the main table, a click on the
    paired one (the Chromium test in test_report.py covers a real browser where one exists)."""
    node = shutil.which("node")
    if not node:
        pytest.skip("no node on PATH")
    out = tmp_path / "js"
    assert leaderboard.main([str(checkpoints), "--out", str(out), "--no-reports",
                             "--baseline", "/ckpt/base"]) == 0
    parser = _Tables()
    parser.feed((out / "leaderboard.html").read_text())
    board, paired = parser.tables
    assert board["id"] == "board" and paired["id"] == "paired"
    items_col = [h and h["col"] for h in board["headers"]].index("items")
    shared_col = [h and h["col"] for h in paired["headers"]].index("shared_items")
    spec = {"hash": "#sort=items:asc", "tables": [board, paired], "clicks": [[1, shared_col]]}
    script = Path(leaderboard.__file__).parents[1] / "report" / "assets" / "leaderboard.js"
    done = subprocess.run([node, str(Path(__file__).parent / "js" / "leaderboard_dom.js"),
                           str(script), json.dumps(spec)], capture_output=True, text=True,
                          timeout=60, check=True)
    result = json.loads(done.stdout)
    items = [board["rows"][i][items_col] for i in result["orders"][0]]
    assert items[0] == "10" and items[1:4] == ["16"] * 3 and set(items[4:]) == {""}  # empty last
    shared = [paired["rows"][i][shared_col] for i in result["orders"][1]]
    assert shared == sorted(shared, key=int, reverse=True)  # numbers: first click descending
    assert result["hash"] == "#sort=items:asc"  # a click on the paired table leaves the address


def test_adapter_runs_are_their_own_checkpoint(tmp_path: Path) -> None:
    root = tmp_path / "outputs"
    worse = ["a zebra sat", "lions roar loudly"]
    make_run(root, "base", "Chameleons", "base", "history_only", users_of(worse), 2.0,
             checkpoint="/ckpt/base")
    make_run(root, "lora", "Chameleons", "lora", "history_only", users_of([REFERENCE] * 2), 2.0,
             checkpoint="/ckpt/base", adapter="/ckpt/lora")
    for baseline, expected in (("/ckpt/base", "base"), ("/ckpt/lora", "lora")):
        rows = paired_rows(root, baseline, tmp_path / baseline.replace("/", "_"))
        assert rows["lora"]["checkpoint"] == "/ckpt/base + adapter /ckpt/lora"
        assert rows[expected]["baseline_run_dir"].endswith(expected)  # its own baseline
        assert all(r["pair_note"] == "" for r in rows.values())  # one match each, no ambiguity


def test_a_checkpoint_folder_on_disk_is_a_checkpoint_baseline(tmp_path: Path) -> None:
    ckpt = tmp_path / "ckpt" / "base"
    ckpt.mkdir(parents=True)  # exists, like a real checkpoint: must not be taken for a run
    root = tmp_path / "outputs"
    make_run(root, "base", "Chameleons", "base", "history_only",
             users_of(["a zebra sat", "lions roar loudly"]), 2.0, checkpoint=str(ckpt))
    make_run(root, "tuned", "Chameleons", "tuned", "history_only", users_of([REFERENCE] * 2),
             2.0, checkpoint=str(tmp_path / "ckpt" / "tuned"))
    rows = paired_rows(root, str(tmp_path / "ckpt" / ".." / "ckpt" / "base"), tmp_path)
    assert rows["tuned"]["baseline_run_dir"].endswith("base")
    assert float(rows["tuned"]["chrf_mean_of_n_diff"]) > 0


def test_rating_runs_pool_samples_like_metrics_json(tmp_path: Path) -> None:
    """Task metrics (dataset.scorer=rating) pool readable samples; the leaderboard's means must be
    metrics.json's figures, and the paired test must see an improvement."""
    pytest.importorskip("inference_core.evaluation.scorers")  # the task scorers' branch
    root = tmp_path / "outputs"

    def rating_users(samples: list[str]) -> dict[str, list[dict[str, Any]]]:
        return {f"u{u}": [item(list(samples), str(1 + (u + k) % 5), record=u * 2 + k)
                          for k in range(2)] for u in range(8)}

    make_run(root, "base", "MovieLens", "base", "history_only",
             rating_users(["1", "5", "no idea"]), 2.0, checkpoint="/ckpt/base", scorer="rating")
    make_run(root, "tuned", "MovieLens", "tuned", "history_only",
             rating_users(["3", "3", "3"]), 2.0, checkpoint="/ckpt/tuned", scorer="rating")
    rows = paired_rows(root, "/ckpt/base", tmp_path)
    for name in ("base", "tuned"):
        metrics = orjson.loads((root / name / "metrics.json").read_bytes())
        for metric in ("rating_mae", "rating_rmse", "rating_exact"):
            assert float(rows[name][metric]) == pytest.approx(metrics[metric]), (name, metric)
    assert rows["tuned"]["rating_mae_diff"] != "" and rows["base"]["rating_mae_ci_low"] != ""
