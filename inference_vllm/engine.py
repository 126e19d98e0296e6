"""vLLM behind the engine interface: every request enqueued at once, results as they finish."""
from __future__ import annotations

import logging
import os
import time
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

from inference_core.model.adapters import Adapter
from inference_core.config import ConfigError
from inference_core.engine import (Completion, GenerationRequest, Request, Result,
                                   SamplingSettings, ScoringRequest, TokenScores)
from inference_vllm.device_defaults import (cpu_kernel_missing, cuda_present,
                                             resolve_device_defaults, scoring_step, seeds_break)
from inference_vllm.scoring import ScoringPlan, Submission

log = logging.getLogger(__name__)

# Keys of conf/engine/vllm.yaml that are ours, not vLLM engine arguments.
# data_parallel_size is ours too: replicas are separate processes (inference_vllm/replicas.py);
# vLLM 0.32 refuses it for offline single-process use.
# scores / generates: which verbs the session's jobs need (run/job_list.session_engine_cfg).
NOT_ENGINE_ARGS = {"name", "_target_", "extra", "data_parallel_size", "scores", "generates"}


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


def engine_args(engine_cfg: Mapping[str, Any], on_gpu: bool | None = None) -> dict[str, Any]:
    """vLLM `LLM(...)` keyword arguments: our config under vLLM's own names, unset ones left out.

    `auto` device settings become this device's values (`on_gpu`: see resolve_device_defaults).
    `engine.speculative` and its keys become vLLM's `speculative_config`; an explicit
    `engine.speculative_config` (or one in `engine.extra`) wins over them.
    """
    ours = NOT_ENGINE_ARGS | SPECULATIVE_KEYS
    resolved = resolve_device_defaults(engine_cfg, on_gpu)
    args = {k: v for k, v in resolved.items() if k not in ours and v is not None}
    if "speculative_config" not in args:
        spec = speculative_config(engine_cfg)
        if spec is not None:
            args["speculative_config"] = spec
    args.update(engine_cfg.get("extra") or {})
    return args


def sampling_params(sampling: SamplingSettings, n: int, seed: int | None = None) -> Any:
    from vllm import SamplingParams
    from vllm.sampling_params import RequestOutputKind

    return SamplingParams(
        n=n, temperature=sampling.temperature, top_p=sampling.top_p, top_k=sampling.top_k,
        max_tokens=sampling.max_tokens, min_tokens=sampling.min_tokens,
        repetition_penalty=sampling.repetition_penalty, seed=seed,
        stop=list(sampling.stop) or None,
        output_kind=RequestOutputKind.FINAL_ONLY)  # only finished requests matter here


def ready_batches(requests: Iterable[GenerationRequest]) -> Callable[[bool], list | None]:
    """`take(block)`: the requests available now, None once there are no more.

    A RequestFeed (requests still being built) answers without waiting; any other iterable is
    taken whole at the first call.
    """
    take_ready = getattr(requests, "take_ready", None)
    if take_ready is not None:
        return take_ready
    remaining = [list(requests)]

    def take(block: bool) -> list | None:
        return remaining.pop() if remaining else None

    return take


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


def use_spawn() -> None:
    """vLLM starts its engine processes with spawn (it reads this when LLM() starts them)."""
    # vLLM forks them unless it sees CUDA initialised here, and a forked child cannot use CUDA
    # once this process has asked torch about it, as libraries loaded here (triton, tvm_ffi) do.
    os.environ["VLLM_WORKER_MULTIPROC_METHOD"] = "spawn"


class VLLMEngine:
    name = "vllm"

    def __init__(self, model_path: str, engine_cfg: Mapping[str, Any], seed: int,
                 adapters: Sequence[Adapter] = ()) -> None:
        use_spawn()
        from vllm import LLM
        from vllm.lora.request import LoRARequest

        missing = cpu_kernel_missing(model_path, cuda_present())
        if missing:
            raise ConfigError(missing)
        self.args = {**lora_args(adapters), **engine_args(engine_cfg)}
        self.scoring_step = scoring_step(engine_cfg, self.args, model_path, cuda_present())
        self.args.update(self.scoring_step.get("engine_args", {}))
        # Ids from 1: vLLM reserves 0 for "no adapter".
        self.lora_requests = {str(a.path): LoRARequest(a.path.name, i, str(a.path))
                              for i, a in enumerate(adapters, start=1)}
        log.info("starting vLLM on %s with %s", model_path, self.args)
        start = time.perf_counter()
        # Stats stay on so that LLM.get_metrics() reports prefix-cache hits and token counters.
        self.llm = LLM(model=model_path, seed=seed, disable_log_stats=False, **self.args)
        self.load_seconds = time.perf_counter() - start
        self.round = 0
        unsafe = seeds_break(self.args, cuda_present())
        if unsafe:
            log.warning("%s", unsafe)
        self.per_request_seeds = unsafe is None
        # Scoring reads a context another request prefilled (inference_vllm/scoring.py).
        self.scoring = ScoringPlan(bool(self.args.get("enable_prefix_caching", True)))

    def generate(self, requests: Iterable[GenerationRequest],
                 sampling: SamplingSettings) -> Iterator[Completion]:
        """Requests join the running batch as they arrive; finished ones are yielded at once."""
        return self.serve_both(requests, sampling)  # type: ignore[return-value]

    def loglikelihood(self, requests: Iterable[ScoringRequest]) -> Iterator[TokenScores]:
        """Each sequence's prompt log-probabilities (one prefill, one throwaway token), in the
        same running batch as any generation."""
        return self.serve_both(requests, None)  # type: ignore[return-value,arg-type]

    def serve_both(self, requests: Iterable[Request],
                   sampling: SamplingSettings | None) -> Iterator[Result]:
        """Generation and scoring requests of one stream join one running batch as they arrive;
        finished ones are yielded at once."""
        engine = self.llm.llm_engine
        shared_params: dict[tuple[SamplingSettings, int], Any] = {}
        pending: dict[str, Submission] = {}
        self.round += 1
        take = ready_batches(requests)
        try:
            while True:
                # Wait for requests only when nothing is running: a busy engine never waits.
                new = take(not engine.has_unfinished_requests())
                if new is None and not engine.has_unfinished_requests():
                    break
                if new:
                    self._add(engine, [s for r in new for s in self._submissions(
                        r, sampling, shared_params)], pending)
                for out in engine.step() if engine.has_unfinished_requests() else ():
                    if out.finished:
                        yield from self._finished(engine, pending.pop(out.request_id), out,
                                                  pending)
        finally:
            if pending:  # the consumer stopped early (a signal): drop what is left
                engine.abort_request(list(pending))

    def _submissions(self, r: Request, sampling: SamplingSettings | None,
                     shared_params: dict[tuple[SamplingSettings, int], Any]) -> list[Submission]:
        if isinstance(r, ScoringRequest):
            return self.scoring.submit(r)
        if self.per_request_seeds and r.seed is not None:
            params = sampling_params(r.sampling_or(sampling), r.num_samples, r.seed)
        else:
            key = (r.sampling_or(sampling), r.num_samples)
            params = shared_params.get(key)
            if params is None:
                params = shared_params[key] = sampling_params(*key)
        return [Submission(r.request_id, list(r.token_ids), params, r.adapter, r)]

    def _finished(self, engine: Any, done: Submission, out: Any,
                  pending: dict[str, Submission]) -> Iterator[Result]:
        if done.request is None:  # a context is cached: the scoring requests that wait for it
            self._add(engine, self.scoring.warmed(done.key), pending)
        elif isinstance(done.request, ScoringRequest):
            result = self.scoring.result(done, out)
            if isinstance(result, Submission):
                self._add(engine, [result], pending)
            else:
                yield result
        else:
            yield to_completion(done.request, out)

    def _add(self, engine: Any, submissions: list[Submission],
             pending: dict[str, Submission]) -> None:
        # Token ids through vLLM's renderer (what LLM.generate does), then straight to the engine
        # under our own ids, so that finished outputs map back to our requests.
        if not submissions:
            return
        inputs = engine.renderer.render_cmpl(
            [{"prompt_token_ids": s.token_ids} for s in submissions])
        for s, prompt in zip(submissions, inputs):
            request_id = f"{self.round}-{s.key}"
            engine.add_request(request_id, prompt, s.params,
                               lora_request=self.lora_request(s.adapter))
            pending[request_id] = s

    def lora_request(self, adapter: str | None) -> Any:
        if adapter is None:
            return None
        if adapter not in self.lora_requests:  # the engine was started without this adapter
            raise ValueError(f"LoRA adapter {adapter} was not given to the engine at start")
        return self.lora_requests[adapter]

    def stats(self) -> dict[str, Any]:
        from inference_vllm.engine_metrics import engine_metrics

        return {"engine_args": self.args, "per_request_seeds": self.per_request_seeds,
                "scoring_step": self.scoring_step, "scoring_rescored": self.scoring.rescored,
                "worker_multiproc_method": os.environ.get("VLLM_WORKER_MULTIPROC_METHOD"),
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
        stop_reasons=tuple(o.stop_reason if isinstance(o.stop_reason, str) else None
                           for o in samples),
    )
