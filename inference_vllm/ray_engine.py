"""vLLM behind Ray Data (`engine=ray`): the same requests as rows through `ray.data.llm` replicas.

`ray.data.llm`'s vLLM stage keeps only `outputs[0]` of each request, so a request with n samples
becomes n rows with n=1 (adjacent, so they share a batch and vLLM's prefix cache shares their
prefill), and finished rows are grouped back per request: a Completion leaves as soon as the last
of its samples is in. Rows stream back batch by batch (`iter_rows`), nothing is materialized.

Sample i of a request draws from the request's own seed + i, what vLLM gives the i-th of n samples
of one seeded request: a job's samples do not depend on its place in the command, the replica or
the batch its rows land in, or a resume.

A Ray Data actor pool lives for one dataset execution: every `generate()` call starts its vLLM
replicas afresh (the pipeline calls it once, plus once per blank-retry round).
"""
from __future__ import annotations

import logging
import signal
import threading
import time
from collections import defaultdict
from contextlib import contextmanager
from typing import Any, Iterable, Iterator, Mapping, Sequence

from inference_core.config import ConfigError
from inference_core.engine import Completion, GenerationRequest, SamplingSettings
from inference_vllm.device_defaults import seeds_break

log = logging.getLogger(__name__)

# Keys of conf/engine/ray.yaml that are ours (Ray and Ray Data settings), not vLLM engine arguments.
NOT_ENGINE_ARGS = {"name", "extra", "_target_", "address", "num_cpus", "concurrency", "batch_size",
                   "max_concurrent_batches", "accelerator"}


def engine_kwargs(engine_cfg: Mapping[str, Any], seed: int) -> dict[str, Any]:
    """vLLM engine arguments for the Ray Data replicas: ours left out, unset ones left out."""
    from inference_vllm.engine import engine_args  # the same mapping as the plain vLLM engine

    # `auto` device settings follow where the replicas run (engine.accelerator), not the driver.
    args = engine_args({k: v for k, v in engine_cfg.items()
                        if k not in NOT_ENGINE_ARGS - {"name", "extra"}},
                       on_gpu=engine_cfg.get("accelerator") is not None)
    args["seed"] = seed
    if engine_cfg.get("accelerator") is None:
        # CPU build: Ray Data's default executor ("uni", or "ray" for TP/PP > 1) asks Ray for GPUs;
        # vLLM's multiprocessing executor runs inside the replica's CPU bundle instead.
        args.setdefault("distributed_executor_backend", "mp")
    return args


def processor_config_kwargs(model_path: str, engine_cfg: Mapping[str, Any],
                            seed: int) -> dict[str, Any]:
    """`vLLMEngineProcessorConfig(...)` keyword arguments (plain values, checked by a unit test)."""
    kwargs = engine_kwargs(engine_cfg, seed)
    workers = int(kwargs.get("tensor_parallel_size", 1)) * int(kwargs.get("pipeline_parallel_size", 1))
    accelerator = engine_cfg.get("accelerator")
    placement: dict[str, Any] | None = None
    accelerator_type = None
    if accelerator is None:
        # Explicit CPU-only placement: without it Ray Data reserves one GPU per worker and waits.
        placement = {"bundles": [{"CPU": 1, "GPU": 0} for _ in range(workers)], "strategy": "PACK"}
    elif str(accelerator).upper() != "GPU":  # "GPU" = any GPU, otherwise a type label like H100
        accelerator_type = str(accelerator)
    return dict(
        model_source=model_path,
        engine_kwargs=kwargs,
        placement_group_config=placement,
        accelerator_type=accelerator_type,
        concurrency=int(engine_cfg.get("concurrency") or 1),
        batch_size=int(engine_cfg.get("batch_size") or 32),
        max_concurrent_batches=int(engine_cfg.get("max_concurrent_batches") or 8),
        # Prompts arrive as chat-templated token ids (`tokenized_prompt`); vLLM detokenizes the
        # output itself (`generated_text`), so none of the processor's CPU stages is needed.
        chat_template_stage=False, tokenize_stage=False, detokenize_stage=False,
        # Otherwise vLLM's Ray metrics logger imports ray.serve (needs ray[serve]).
        log_engine_metrics=False,
    )


def sampling_dict(sampling: SamplingSettings) -> dict[str, Any]:
    """`vllm.SamplingParams(**...)` of one row: always n=1, the samples are separate rows."""
    params: dict[str, Any] = dict(
        n=1, temperature=sampling.temperature, top_p=sampling.top_p, top_k=sampling.top_k,
        max_tokens=sampling.max_tokens, min_tokens=sampling.min_tokens,
        repetition_penalty=sampling.repetition_penalty)
    if sampling.stop:
        params["stop"] = list(sampling.stop)
    return params


def request_rows(requests: Sequence[GenerationRequest], seeded: bool = True,
                 ) -> list[dict[str, Any]]:
    """One row per sample; a request's samples are adjacent (same batch, shared prefix cache).
    Token ids go in as they are (the stage's `tokenized_prompt`): no decoding, no re-tokenizing.
    The request's seed travels as an int column and a flag (an Arrow column holds one type);
    `seeded` False leaves every row to the engine seed."""
    return [{"rid": r.request_id, "sample": i, "tokenized_prompt": list(r.token_ids),
             "seed": r.seed or 0, "seeded": seeded and r.seed is not None}
            for r in requests for i in range(r.num_samples)]


def row_functions(sampling: SamplingSettings) -> tuple[Any, Any]:
    """The processor's preprocess (our row -> vLLM stage input) and postprocess (-> our row).

    Plain closures over plain values, no module references: Ray pickles them by value, so the
    workers of a remote cluster need nothing of this package installed.
    """
    params = sampling_dict(sampling)
    max_tokens = sampling.max_tokens

    def preprocess(row: dict[str, Any]) -> dict[str, Any]:
        row_params = dict(params)
        if row["seeded"]:  # vLLM seeds the i-th of n samples of a request with seed + i
            row_params["seed"] = int(row["seed"]) + int(row["sample"])
        return {"sampling_params": row_params}

    def postprocess(row: dict[str, Any]) -> dict[str, Any]:
        tokens = int(row["num_generated_tokens"])
        # The stage keeps the text and tokens but not vLLM's finish_reason: a sample that used
        # its whole max_tokens budget ran out of length, any shorter one stopped (EOS or a stop
        # string). Prompts are budgeted to fit max_model_len, so that cannot cut one short.
        return {"rid": row["rid"], "sample": int(row["sample"]), "text": row["generated_text"],
                "tokens": tokens, "finish_reason": "length" if tokens >= max_tokens else "stop"}

    return preprocess, postprocess


class RayEngine:
    name = "ray"

    def __init__(self, model_path: str, engine_cfg: Mapping[str, Any], seed: int,
                 adapters: Sequence[Any] = ()) -> None:
        import ray

        if adapters:  # also refused at config time; here for callers that skip the checks
            raise ConfigError("engine=ray does not serve LoRA adapters yet: use engine=vllm")

        self.model_path = model_path
        self.cfg = dict(engine_cfg)
        self.seed = seed
        self.round = 0
        self.calls: list[dict[str, Any]] = []
        start = time.perf_counter()
        address = engine_cfg.get("address")
        self.started_ray = False
        if not ray.is_initialized():
            with keep_sigterm_handler():
                if address:  # "auto" or "ray://host:10001": join a running cluster
                    ray.init(address=str(address), log_to_driver=True)
                else:
                    # A local instance. Its CPU count is a scheduling budget, not a thread count:
                    # with the real 2 CPUs of a small machine the input tasks, the engine actor
                    # and the output tasks wait on each other forever; 8 lets them all be placed.
                    ray.init(num_cpus=engine_cfg.get("num_cpus"), include_dashboard=False,
                             log_to_driver=True)
            self.started_ray = True
        # The pipeline draws its own progress bar; Ray Data's would log a line every 10 s.
        from ray.data import DataContext

        DataContext.get_current().enable_progress_bars = False
        self.resources = ray.cluster_resources()
        self.processor_kwargs = processor_config_kwargs(model_path, engine_cfg, seed)
        unsafe = seeds_break(self.processor_kwargs["engine_kwargs"],
                             engine_cfg.get("accelerator") is not None)
        if unsafe:
            log.warning("%s", unsafe)
        self.per_request_seeds = unsafe is None
        # The vLLM replicas themselves start with the first dataset execution (in generate()).
        self.load_seconds = time.perf_counter() - start
        log.info("Ray %s (%s), vLLM replicas: %s", ray.__version__,
                 address or "local instance", self.processor_kwargs)

    def build_processor(self, sampling: SamplingSettings) -> Any:
        from ray.data.llm import build_processor, vLLMEngineProcessorConfig

        kwargs = dict(self.processor_kwargs)
        # A fresh replica per call restarts vLLM's generator from the engine seed, which draws the
        # rows of requests without a seed of their own: a retry round with the same engine seed
        # could redraw exactly the blank samples it is meant to replace.
        kwargs["engine_kwargs"] = {**kwargs["engine_kwargs"], "seed": self.seed + self.round - 1}
        config = vLLMEngineProcessorConfig(**kwargs)
        preprocess, postprocess = row_functions(sampling)
        with keep_sigterm_handler():
            return build_processor(config, preprocess=preprocess, postprocess=postprocess)

    def generate(self, requests: Iterable[GenerationRequest],
                 sampling: SamplingSettings) -> Iterator[Completion]:
        """One processor run per sampling setting (a processor's rows share their settings)."""
        groups: dict[SamplingSettings, list[GenerationRequest]] = {}
        for r in requests:  # Ray Data takes the whole dataset at once
            groups.setdefault(r.sampling_or(sampling), []).append(r)
        self.round += 1
        for own, group in groups.items():
            yield from self._generate(group, own)

    def _generate(self, requests: list[GenerationRequest],
                  sampling: SamplingSettings) -> Iterator[Completion]:
        import ray

        by_id = {r.request_id: r for r in requests}
        rows = request_rows(requests, self.per_request_seeds)
        if not rows:
            return
        processor = self.build_processor(sampling)
        start = time.perf_counter()
        first_row = None
        samples: dict[str, dict[int, dict[str, Any]]] = defaultdict(dict)
        dataset = processor(ray.data.from_items(rows))
        for row in dataset.iter_rows():
            if first_row is None:
                first_row = time.perf_counter() - start
            rid = row["rid"]
            got = samples[rid]
            got[int(row["sample"])] = row
            request = by_id[rid]
            if len(got) == request.num_samples:
                del samples[rid]
                yield to_completion(request, [got[i] for i in range(request.num_samples)])
        if samples:  # not expected: the stage raises on a failed row rather than dropping it
            log.warning("%d requests came back without all their samples", len(samples))
        self.calls.append({"rows": len(rows), "requests": len(requests),
                           "seconds": round(time.perf_counter() - start, 3),
                           "first_row_seconds": round(first_row or 0.0, 3)})

    def stats(self) -> dict[str, Any]:
        import ray

        kwargs = self.processor_kwargs
        return {
            "engine_args": kwargs["engine_kwargs"],
            "ray_version": ray.__version__,
            "ray_address": self.cfg.get("address") or "local",
            "ray_resources": {k: v for k, v in self.resources.items()
                              if k in ("CPU", "GPU", "memory") or k.startswith("accelerator")},
            "replicas": kwargs["concurrency"], "batch_size": kwargs["batch_size"],
            # Every row of a seeded request draws from that seed (unless seeds_break says why not).
            "per_request_seeds": self.per_request_seeds,
            "placement": kwargs["placement_group_config"] or {"accelerator": self.cfg.get("accelerator")},
            # Each call starts its replicas: first_row_seconds includes that start-up.
            "calls": self.calls,
        }

    def close(self) -> None:
        import ray

        if self.started_ray and ray.is_initialized():
            ray.shutdown()


@contextmanager
def keep_sigterm_handler() -> Iterator[None]:
    """Every `ray.init` call, even a no-op one on a running instance (build_processor makes one),
    installs Ray's SIGTERM handler, `sys.exit(15)`; the pipeline's own handler (Interrupted, exit
    143 with a resume hint) must stay in place while rows stream."""
    main = threading.current_thread() is threading.main_thread()
    previous = signal.getsignal(signal.SIGTERM) if main else None
    try:
        yield
    finally:
        if main and previous is not None:
            signal.signal(signal.SIGTERM, previous)


def to_completion(request: GenerationRequest, rows: list[Mapping[str, Any]]) -> Completion:
    return Completion(
        request_id=request.request_id,
        texts=tuple(str(r["text"]) for r in rows),
        finish_reasons=tuple(str(r["finish_reason"]) for r in rows),
        output_tokens=tuple(int(r["tokens"]) for r in rows),
        prompt_tokens=len(request.token_ids),
    )
