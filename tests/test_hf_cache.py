"""The engine's KV caches against plain greedy `generate()`, on a model with sliding-window layers
(a tiny random Gemma-3) and on a full-attention one (the bench's tiny random Qwen3).

With top_k=1 sampling is deterministic: every sample of every request must be the tokens a plain
greedy `model.generate()` of that prompt alone gives (float32: padding changes no number), for
prompts longer and shorter than the window, one sample (generate()'s own cache) or two (the
engine's shared prefill, repeated per sample).
"""
from __future__ import annotations

import logging
from dataclasses import replace
from typing import Any

import pytest

from inference_core.engine import GenerationRequest, SamplingSettings
from inference_hf.bench.__main__ import prompt_set
from inference_hf.bench.shapes import random_model
from inference_hf.engine import HFEngine
from inference_hf.kv_cache import cache_for

WINDOW = 8
# Window 8 and 12 new tokens: batches [40, 30] (past the window) and [10, 7, 6, 4] (one past,
# three within, all past it while decoding).
LENGTHS = (40, 30, 10, 7, 6, 4)
TOP1 = SamplingSettings(num_samples=1, temperature=1.0, top_p=1.0, top_k=1, max_tokens=12,
                        seed=42)


def tiny_gemma3(vocab_size: int) -> Any:
    """Gemma-3's text model at toy size: six layers, five of them sliding (its 5:1 pattern)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.for_model(
        "gemma3_text", vocab_size=vocab_size, hidden_size=64, intermediate_size=128,
        num_hidden_layers=6, num_attention_heads=4, num_key_value_heads=2, head_dim=16,
        sliding_window=WINDOW, max_position_embeddings=512)
    assert config.layer_types.count("sliding_attention") == 5
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(config, dtype=torch.float32,
                                            attn_implementation="sdpa").eval()


@pytest.fixture(scope="module")
def models(tokenizer: Any) -> dict[str, Any]:
    import torch

    torch.manual_seed(0)
    return {"gemma3": tiny_gemma3(len(tokenizer)),
            "qwen3": random_model("tiny", len(tokenizer), "cpu", torch.float32)}


@pytest.fixture(scope="module")
def requests(tokenizer: Any) -> list[GenerationRequest]:
    ids = [r.token_ids for r in prompt_set(tokenizer, 12, 40, 1, seed=7)]
    return [GenerationRequest(f"len{n}", ids[i][:n], 1) for i, n in enumerate(LENGTHS)]


def plain_greedy(model: Any, tokenizer: Any, request: GenerationRequest) -> str:
    import torch

    ids = torch.tensor([request.token_ids])
    out = model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False,
                         max_new_tokens=TOP1.max_tokens, pad_token_id=tokenizer.eos_token_id)
    return tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True)


@pytest.fixture(scope="module")
def greedy(models: dict[str, Any], tokenizer: Any,
           requests: list[GenerationRequest]) -> dict[str, dict[str, str]]:
    return {name: {r.request_id: plain_greedy(model, tokenizer, r) for r in requests}
            for name, model in models.items()}


@pytest.mark.slow
@pytest.mark.parametrize("cache", ["static", "dynamic"])
@pytest.mark.parametrize("n", [1, 2])
@pytest.mark.parametrize("name", ["gemma3", "qwen3"])
def test_top1_samples_are_plain_greedy_generate(models: dict[str, Any], tokenizer: Any,
                                                requests: list[GenerationRequest],
                                                greedy: dict[str, dict[str, str]], name: str,
                                                n: int, cache: str) -> None:
    engine = HFEngine.around(models[name], tokenizer, {"cache": cache, "max_batch_size": 100,
                                                      "max_batch_tokens": 10**6}, seed=42)
    assert engine.cache == cache  # sliding layers keep the static cache too
    out = {c.request_id: c.texts
           for c in engine.generate([replace(r, num_samples=n) for r in requests],
                                    replace(TOP1, num_samples=n))}
    assert engine.batches == 2  # the two batches LENGTHS plans
    assert out == {i: (text,) * n for i, text in greedy[name].items()}
    # Not one repeated token: the test would not tell a wrong cache apart.
    assert len(set(greedy[name].values())) == len(requests)


def test_models_the_static_cache_cannot_hold_fall_back_to_dynamic(
        caplog: pytest.LogCaptureFixture) -> None:
    """Qwen3-Next's linear-attention layers keep a recurrent state, not rows of keys: the engine
    says so once and uses the dynamic cache."""
    from transformers import AutoConfig

    with caplog.at_level(logging.INFO, logger="inference_hf.kv_cache"):
        assert cache_for(AutoConfig.for_model("qwen3_next"), "static") == "dynamic"
    assert "using the dynamic cache" in caplog.text
    assert cache_for(AutoConfig.for_model("gemma3_text"), "static") == "static"
    assert cache_for(AutoConfig.for_model("qwen3"), "dynamic") == "dynamic"


@pytest.mark.slow
@pytest.mark.parametrize("name", ["gemma3", "qwen3"])
def test_rows_finishing_at_different_steps_keep_their_own_samples(
        models: dict[str, Any], tokenizer: Any, requests: list[GenerationRequest],
        name: str) -> None:
    """Full sampling with a stop string many tokens hold: the rows of a static-cache batch stop
    at different steps, the finished ones padded while the rest go on. Each request's samples
    are the ones it draws alone, and the ones the dynamic cache draws."""
    sampling = SamplingSettings(num_samples=3, temperature=1.0, top_p=1.0, top_k=0,
                                max_tokens=10, seed=42, stop=("an",))
    # Seeded as the pipeline seeds them: the same draws in any engine call.
    batch = [replace(r, num_samples=3, seed=i) for i, r in enumerate(requests)]
    engines = {cache: HFEngine.around(models[name], tokenizer, {
        "cache": cache, "max_batch_size": 100, "max_batch_tokens": 10**6}, seed=42)
        for cache in ("static", "dynamic")}

    def run(cache: str, requests: list[GenerationRequest]) -> dict[str, Any]:
        return {c.request_id: c for c in engines[cache].generate(requests, sampling)}

    static = run("static", batch)
    steps = [n for c in static.values() for n in c.output_tokens]
    assert len(set(steps)) >= 5 and min(steps) < 5 and max(steps) == sampling.max_tokens
    assert {r for c in static.values() for r in c.finish_reasons} == {"stop", "length"}
    assert run("dynamic", batch) == static
    for request in batch:
        assert run("static", [request]) == {request.request_id: static[request.request_id]}
