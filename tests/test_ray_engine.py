"""`engine=ray`: vLLM replicas under Ray Data (ray.data.llm), on a local Ray instance on CPU."""
from __future__ import annotations

import dataclasses
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any, Iterator

import pytest
from omegaconf import OmegaConf

from conftest import assert_well_formed, compose
from inference_core.engine import Completion, GenerationRequest, SamplingSettings
from inference_vllm.ray_engine import (NOT_ENGINE_ARGS, RayEngine, engine_kwargs,
                                       processor_config_kwargs, request_rows, row_functions)

pytestmark = pytest.mark.engine

SAMPLING = SamplingSettings(num_samples=2, temperature=1.0, top_p=0.9, top_k=50, max_tokens=8,
                            seed=42)
QUESTIONS = ["What is the capital of France?", "Write a haiku about the sea.",
             "Name three primary colors."]


def ray_cfg(*overrides: str) -> dict[str, Any]:
    """The engine group as the pipeline hands it over: resolved, max_model_len filled."""
    cfg = OmegaConf.to_container(compose("engine=ray", *overrides).engine, resolve=True)
    cfg["max_model_len"] = 2048
    return cfg


def test_engine_args_keep_our_keys_out_of_vllm() -> None:
    from vllm import AsyncEngineArgs

    cfg = ray_cfg("+engine.extra.max_logprobs=5")
    kwargs = processor_config_kwargs("/models/m", cfg, seed=42)
    args = kwargs["engine_kwargs"]
    assert NOT_ENGINE_ARGS <= cfg.keys()  # every key we call ours exists in conf/engine/ray.yaml
    assert not NOT_ENGINE_ARGS & args.keys()
    assert args["max_model_len"] == 2048 and args["seed"] == 42 and args["max_logprobs"] == 5
    assert args["distributed_executor_backend"] == "mp"
    assert None not in args.values()
    # Every remaining key is a vLLM engine argument (what the replica passes to AsyncEngineArgs).
    assert args.keys() <= {f.name for f in dataclasses.fields(AsyncEngineArgs)}
    assert kwargs["placement_group_config"] == {"bundles": [{"CPU": 1, "GPU": 0}],
                                                "strategy": "PACK"}
    assert kwargs["accelerator_type"] is None
    assert (kwargs["concurrency"], kwargs["batch_size"]) == (cfg["concurrency"], cfg["batch_size"])
    # On GPUs: no CPU bundles, Ray Data's own GPU placement (one per TP worker), typed or not.
    gpu = processor_config_kwargs("/models/m", {**cfg, "accelerator": "H100",
                                                "tensor_parallel_size": 4}, seed=1)
    assert gpu["placement_group_config"] is None and gpu["accelerator_type"] == "H100"
    assert "distributed_executor_backend" not in gpu["engine_kwargs"]
    assert processor_config_kwargs("/m", {**cfg, "accelerator": "GPU"}, 1)["accelerator_type"] is None
    assert engine_kwargs({**cfg, "extra": {"distributed_executor_backend": "uni"}},
                         seed=0)["distributed_executor_backend"] == "uni"
    # The processor config accepts the whole mapping (validation only, no Ray started).
    from ray.data.llm import vLLMEngineProcessorConfig

    vLLMEngineProcessorConfig(**kwargs)


def test_rows_carry_n1_sampling_and_map_back_without_our_package() -> None:
    from ray import cloudpickle

    sampling = dataclasses.replace(SAMPLING, stop=("\n",))
    pre, post = row_functions(sampling)
    params = pre({"rid": "a", "sample": 1, "tokenized_prompt": [1, 2], "seed": 0,
                  "seeded": False})["sampling_params"]
    assert params == {"n": 1, "temperature": 1.0, "top_p": 0.9, "top_k": 50, "max_tokens": 8,
                      "min_tokens": 1, "repetition_penalty": 1.0, "stop": ["\n"]}
    out = {"rid": "a", "sample": 1, "generated_text": "hi", "num_generated_tokens": 8}
    assert post(out)["finish_reason"] == "length"
    assert post({**out, "num_generated_tokens": 3}) == {
        "rid": "a", "sample": 1, "text": "hi", "tokens": 3, "finish_reason": "stop"}
    # Pickled by value: they load and run where this package cannot be imported (cluster nodes).
    code = ("import sys\n"
            "class Block:\n"
            "    def find_spec(self, name, path=None, target=None):\n"
            "        if name.split('.')[0] in ('inference_vllm', 'inference_core'):\n"
            "            raise ImportError(name)\n"
            "sys.meta_path.insert(0, Block())\n"
            "from ray import cloudpickle\n"
            "pre, post = cloudpickle.loads(sys.stdin.buffer.read())\n"
            "print(pre({'rid': 'a', 'sample': 0, 'seed': 7, 'seeded': True})"
            "['sampling_params']['n'],"
            " post({'rid': 'a', 'sample': 0, 'generated_text': 'x', 'num_generated_tokens': 1})"
            "['finish_reason'])\n")
    run = subprocess.run([sys.executable, "-c", code], input=cloudpickle.dumps((pre, post)),
                         capture_output=True, cwd="/", timeout=120)
    assert run.stdout.decode().split() == ["1", "stop"], run.stderr.decode()[-2000:]


def test_each_row_draws_from_its_requests_seed_not_its_routing_id() -> None:
    """Sample i of a request seeded s draws from s + i (vLLM's seed for the i-th of n samples),
    whatever the request's id (it names the job's and the collector's place in the command)."""
    pre, _ = row_functions(SAMPLING)

    def seeds(*requests: GenerationRequest) -> dict[str, list[int | None]]:
        out: dict[str, list[int | None]] = {}
        for row in request_rows(requests):
            out.setdefault(row["rid"], []).append(pre(row)["sampling_params"].get("seed"))
        return out

    first = seeds(GenerationRequest("0-0-r1", (1, 2), 2, seed=1000),
                  GenerationRequest("0-1-r2", (3,), 3, seed=77))
    moved = seeds(GenerationRequest("4-2-r2", (3,), 3, seed=77),
                  GenerationRequest("3-5-r1", (1, 2), 2, seed=1000))
    assert first == {"0-0-r1": [1000, 1001], "0-1-r2": [77, 78, 79]}
    assert moved == {"4-2-r2": [77, 78, 79], "3-5-r1": [1000, 1001]}
    # Without a seed of its own a request draws from the engine's seed.
    assert seeds(GenerationRequest("x", (1,), 2)) == {"x": [None, None]}


@pytest.fixture(scope="module")
def ray_engine(model_path: Path) -> Iterator[RayEngine]:
    engine = RayEngine(str(model_path), ray_cfg(), seed=42)
    yield engine
    engine.close()


def test_ray_engine_yields_n_samples_per_request(ray_engine: RayEngine, tokenizer: Any) -> None:
    import ray

    requests = []
    for i, q in enumerate(QUESTIONS):
        text = tokenizer.apply_chat_template([{"role": "user", "content": q}], tokenize=False,
                                             add_generation_prompt=True)
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        requests.append(GenerationRequest(f"0-0-r{i}", tuple(ids), SAMPLING.num_samples,
                                          seed=1000 + i))
    # The first request again under another job's and collector's routing id, with its seed.
    requests.append(dataclasses.replace(requests[0], request_id="5-3-r0"))
    def handler(signum: int, frame: Any) -> None:  # stands in for the pipeline's stop handler
        raise AssertionError("not called")

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        out: list[Completion] = list(ray_engine.generate(requests, SAMPLING))
        # build_processor's ray.init would have put Ray's sys.exit(15) handler in its place.
        assert signal.getsignal(signal.SIGTERM) is handler
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert sorted(c.request_id for c in out) == sorted(r.request_id for r in requests)
    by_id = {c.request_id: c for c in out}
    for r in requests:
        assert_well_formed(by_id[r.request_id], r, 2, SAMPLING.max_tokens)
    # The request's seed draws its samples, not its id; its two rows (seed, seed + 1) are two draws.
    assert by_id["5-3-r0"].texts == by_id["0-0-r0"].texts
    assert any(len(set(c.texts)) > 1 for c in out)
    stats = ray_engine.stats()
    assert stats["calls"][0]["rows"] == 8 and stats["ray_resources"]["CPU"] == 8
    assert stats["per_request_seeds"] is True
    assert stats["placement"]["bundles"] == [{"CPU": 1, "GPU": 0}]
    ray_engine.close()  # we started this Ray instance: closing shuts it down
    assert not ray.is_initialized()
