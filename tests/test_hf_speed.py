"""The Transformers engine's speed work: the bench's tiny mode, batch-independent samples at any
width, `max_batch_tokens: auto`, and out-of-memory batches split (a lone request skipped) instead
of fatal.

A 2-layer random-weight Qwen3 (inference_hf/bench/shapes.py) in float32 stands in for a model
here: the engine runs unchanged over it, in seconds. float32 because left padding and batch
shape then leave every row's numbers exactly unchanged (bf16 rounds differently per shape).
"""
from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from conftest import REPO
from inference_core.engine import GenerationRequest, SamplingSettings
from inference_hf.bench.__main__ import prompt_set
from inference_hf.bench.shapes import random_model
from inference_hf.budget import kv_bytes_per_token
from inference_hf.engine import HFEngine

SAMPLING = SamplingSettings(num_samples=5, temperature=0.7, top_p=0.85, top_k=50, max_tokens=4,
                            seed=42, repetition_penalty=1.1, stop=("\n",))


@pytest.fixture(scope="module")
def tiny_model(tokenizer: Any) -> Any:
    import torch

    return random_model("tiny", len(tokenizer), "cpu", torch.float32)


def tiny_engine(model: Any, tokenizer: Any, **cfg: Any) -> HFEngine:
    return HFEngine.around(model, tokenizer, {"max_batch_size": 1000, **cfg}, seed=42)


def texts(engine: HFEngine, requests: list[GenerationRequest]) -> dict[str, tuple[str, ...]]:
    return {c.request_id: c.texts for c in engine.generate(requests, SAMPLING)}


@pytest.mark.slow
def test_bench_tiny_mode_writes_both_widths(tmp_path: Path) -> None:
    out = tmp_path / "hf_steps.json"
    done = subprocess.run(
        [sys.executable, "-m", "inference_hf.bench", "--tiny", "--threads", "1", "--prompt-tokens", "24",
         "--max-tokens", "3", "--breakdown-tokens", "2", "--out", str(out)],
        cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(out.read_text())
    assert set(report["widths"]) == {"40", "200"} == set(report["engine_vs_generate"])
    for rows, width in report["widths"].items():
        assert width["rows"] == int(rows) and width["engine_vs_generate"] > 0
        for run in ("engine", "generate"):
            assert width["timed"][run]["samples"] == int(rows)
            assert width["timed"][run]["step_s"] > 0 and width["timed"][run]["prefill"] > 0
            assert width["breakdown"][run]["step_forward_per_step_s"] > 0
        assert width["breakdown"]["engine"]["sampler_per_step_s"] > 0
    assert report["versions"]["torch"] and report["machine"]["cpu_count"]
    assert report["device"]["device"] == "cpu" and report["model"]["layers"] == 2
    assert "engine_vs_generate" in done.stdout  # the printed table


@pytest.mark.slow
def test_bench_imports_neither_vllm_nor_hydra() -> None:
    """A GPU node may have only torch and transformers: the bench must not need the rest."""
    code = ("import sys, inference_hf.bench.__main__; "
            "print(sorted({m.split('.')[0] for m in sys.modules} "
            "& {'vllm', 'hydra', 'omegaconf', 'orjson', 'datasets', 'peft'}))")
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "[]"


def test_rows_sample_the_same_in_batches_of_1_40_and_200_rows(tiny_model: Any,
                                                              tokenizer: Any) -> None:
    requests = prompt_set(tokenizer, 40, 24, SAMPLING.num_samples, seed=3)
    engine = tiny_engine(tiny_model, tokenizer)
    by_width = {}
    for prompts_a_batch in (8, 40):  # 40 and 200 rows a batch
        engine.max_batch_size = prompts_a_batch
        by_width[prompts_a_batch * SAMPLING.num_samples] = texts(engine, requests)
    assert by_width[40] == by_width[200]
    # One row a batch: a request's first sample alone (its seed is the 5-sample run's first).
    engine.max_batch_size = 1
    some = [replace(r, num_samples=1) for r in requests[::8]]
    alone = {c.request_id: c.texts for c in engine.generate(some, replace(SAMPLING,
                                                                            num_samples=1))}
    assert alone == {r.request_id: by_width[200][r.request_id][:1] for r in some}
    # And the samples of one request are not copies of one another.
    assert any(len(set(t)) > 1 for t in by_width[200].values())


def test_static_cache_samples_what_the_dynamic_cache_samples(tiny_model: Any,
                                                             tokenizer: Any) -> None:
    requests = prompt_set(tokenizer, 6, 24, SAMPLING.num_samples, seed=4)
    dynamic = texts(tiny_engine(tiny_model, tokenizer, cache="dynamic"), requests)
    assert texts(tiny_engine(tiny_model, tokenizer, cache="static"), requests) == dynamic


def test_auto_budget_is_sized_from_memory_and_recorded(tiny_model: Any, tokenizer: Any) -> None:
    engine = tiny_engine(tiny_model, tokenizer, max_batch_tokens="auto")
    assert engine.stats()["max_batch_tokens"] is None  # sized when the first batch is planned
    texts(engine, prompt_set(tokenizer, 2, 24, SAMPLING.num_samples, seed=5))
    stats = engine.stats()
    assert stats["max_batch_tokens"] > 0
    auto = stats["max_batch_tokens_auto"][str(SAMPLING.num_samples)]
    assert auto["max_batch_tokens"] == stats["max_batch_tokens"] and auto["free_bytes"] > 0
    # 2 layers x 2 KV heads x 32 dims x (K and V) x 4 bytes (float32).
    assert auto["kv_bytes_per_token"] == 2 * 2 * 2 * 32 * 4
    # An explicit number is used as given.
    assert tiny_engine(tiny_model, tokenizer, max_batch_tokens=5000).stats()[
        "max_batch_tokens"] == 5000


def test_auto_budget_is_sized_for_each_sampling_group(tiny_model: Any, tokenizer: Any,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """A prompt's prefill is shared by its samples: a 5-sample group gets a larger token budget
    than a 1-sample group from the same memory. Sized once from the first (1-sample) group, the
    second group's 40 prompts (~6,000 padded tokens) would not fit one batch."""
    from inference_hf import budget

    # Room for 5,500 tokens at 1 sample a prompt (10,752 bytes a token: KV 1,024 + prefill
    # 9,728), ~19,900 at 5 (1,024 + 9,728 / 5), less the 15% margin.
    monkeypatch.setattr(budget, "free_bytes", lambda device: 5500 * 10752 * 100 // 85 + 100)
    one = replace(SAMPLING, num_samples=1)
    first = [replace(r, sampling=one) for r in prompt_set(tokenizer, 2, 24, 1, seed=8)]
    second = prompt_set(tokenizer, 40, 24, SAMPLING.num_samples, seed=9)
    engine = tiny_engine(tiny_model, tokenizer, max_batch_tokens="auto")
    assert len(list(engine.generate(first + second, SAMPLING))) == 42
    assert engine.batches == 2  # one batch a group
    auto = engine.stats()["max_batch_tokens_auto"]
    assert auto["1"]["max_batch_tokens"] == 5500 and auto["5"]["max_batch_tokens"] > 19000


def test_kv_bytes_per_token_of_qwen3_8b() -> None:
    from transformers import AutoConfig

    from inference_hf.bench.shapes import SHAPES

    config = AutoConfig.for_model("qwen3", vocab_size=49152, **SHAPES["qwen3-8b"])
    assert kv_bytes_per_token(config, 2) == 2 * 36 * 8 * 128 * 2  # 144 KiB in bf16


def test_out_of_memory_batch_is_split_and_the_run_completes(tiny_model: Any, tokenizer: Any,
                                                            monkeypatch: pytest.MonkeyPatch
                                                            ) -> None:
    import torch

    requests = prompt_set(tokenizer, 8, 24, SAMPLING.num_samples, seed=6)
    engine = tiny_engine(tiny_model, tokenizer)
    expected = texts(engine, requests)
    decode = engine._decode
    too_big = []

    def decode_or_fail(ids: Any, *args: Any) -> Any:
        if len(ids) > 2 * SAMPLING.num_samples:  # more than two prompts' rows do not fit
            too_big.append(len(ids))
            raise torch.OutOfMemoryError("CUDA out of memory (injected by the test)")
        return decode(ids, *args)

    monkeypatch.setattr(engine, "_decode", decode_or_fail)
    assert texts(engine, requests) == expected
    assert too_big == [40, 20]  # 8 prompts failed, then 4; halves of 2 fit
    assert engine.stats()["oom_splits"] == 2


def test_a_request_out_of_memory_alone_is_skipped_and_the_rest_run(
        tiny_model: Any, tokenizer: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """It gets no samples and the reason (the pipeline lists it in skipped_items); its batch-mates
    and the batches after it still run."""
    import torch

    requests = prompt_set(tokenizer, 4, 24, SAMPLING.num_samples, seed=6)
    engine = tiny_engine(tiny_model, tokenizer)
    expected = texts(engine, requests)
    too_long = max(requests, key=lambda r: len(r.token_ids))
    decode = engine._decode

    def decode_or_fail(ids: Any, *args: Any) -> Any:
        if ids.shape[1] == len(too_long.token_ids):  # any batch holding the longest prompt
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB\nmore")
        return decode(ids, *args)

    monkeypatch.setattr(engine, "_decode", decode_or_fail)
    out = {c.request_id: c for c in engine.generate(requests, SAMPLING)}
    skipped = out.pop(too_long.request_id)
    assert skipped.texts == () and skipped.prompt_tokens == len(too_long.token_ids)
    assert skipped.error.startswith("out of memory alone (")
    assert skipped.error.endswith("CUDA out of memory. Tried to allocate 2.00 GiB")
    assert {i: c.texts for i, c in out.items()} == {
        i: t for i, t in expected.items() if i != too_long.request_id}
    assert engine.stats()["oom_skips"] == 1


def test_cublas_allocation_failure_splits_like_out_of_memory(
        tiny_model: Any, tokenizer: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """cuBLAS reports a failed allocation as a plain RuntimeError; any other error still ends
    the run."""
    requests = prompt_set(tokenizer, 4, 24, SAMPLING.num_samples, seed=10)
    engine = tiny_engine(tiny_model, tokenizer)
    expected = texts(engine, requests)
    decode = engine._decode

    def decode_or_fail(ids: Any, *args: Any) -> Any:
        if len(ids) > 2 * SAMPLING.num_samples:
            raise RuntimeError("CUDA error: CUBLAS_STATUS_ALLOC_FAILED when calling "
                               "`cublasCreate(handle)`")
        return decode(ids, *args)

    monkeypatch.setattr(engine, "_decode", decode_or_fail)
    assert texts(engine, requests) == expected
    assert engine.stats()["oom_splits"] == 1
    monkeypatch.setattr(engine, "_decode", lambda *a: (_ for _ in ()).throw(
        RuntimeError("CUDA error: an illegal memory access was encountered")))
    with pytest.raises(RuntimeError, match="illegal memory access"):
        texts(engine, requests[:1])
