"""Transformers behind the engine interface: length-sorted, left-padded batches through generate().

Unlike vLLM there is no continuous batching, so the engine plans its own batches: longest prompts
first (a batch then pads little, and an out-of-memory batch fails at the start, not hours in),
filled up to a token budget, and yields every request of a batch as soon as that batch is done.
"""
from __future__ import annotations

import logging
import os
import time
from contextlib import nullcontext
from typing import TYPE_CHECKING, Any, ContextManager, Iterable, Iterator, Mapping, Sequence

from inference_core.engine import (Completion, GenerationRequest, SamplingSettings,
                                   ScoringRequest, TokenScores)
from inference_hf.attention import use_decode_attention
from inference_hf.batches import left_padded, padded_tokens, plan_batches
from inference_hf.budget import Budget, auto_budget, is_out_of_memory, release_memory
from inference_hf.kv_cache import cache_for, prefill
from inference_hf.texts import RowReader

if TYPE_CHECKING:  # only a type here: importing it needs omegaconf, which a bench node may lack
    from inference_core.model.adapters import Adapter

log = logging.getLogger(__name__)

DTYPE_ALIASES = {"bf16": "bfloat16", "fp16": "float16", "half": "float16", "fp32": "float32",
                 "float": "float32"}


def resolve_device(requested: str | None) -> str:
    """An explicit device wins; else one GPU per torchrun rank (LOCAL_RANK), else the CPU."""
    import torch

    if requested:
        return str(requested)
    if not torch.cuda.is_available():
        return "cpu"
    local_rank = os.environ.get("LOCAL_RANK")
    return f"cuda:{local_rank}" if local_rank is not None else "cuda"


def resolve_dtype(name: str | None, device: str) -> Any:
    import torch

    if name in (None, "auto"):
        if not device.startswith("cpu"):
            return torch.bfloat16
        # Measured on this project's CPU (AVX512-BF16, 2 cores), SmolLM2-135M generate(): bf16 was
        # 2-10x faster than fp32 at every batch size (8 prompts x 4 samples: ~300 vs ~30 tok/s).
        # Without native bf16 support the emulated path is slow, so such CPUs keep fp32.
        has_bf16 = getattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)()
        return torch.bfloat16 if has_bf16 else torch.float32
    dtype = getattr(torch, DTYPE_ALIASES.get(str(name), str(name)), None)
    if not isinstance(dtype, torch.dtype):
        raise ValueError(f"engine.dtype: unknown torch dtype {name!r}")
    return dtype


def generate_kwargs(sampling: SamplingSettings, num_samples: int, tokenizer: Any,
                    pad_id: int) -> dict[str, Any]:
    """generate() arguments with vLLM's meaning: temperature 0 is greedy, top_k <= 0 is off."""
    greedy = sampling.temperature <= 0
    kwargs: dict[str, Any] = {
        "max_new_tokens": sampling.max_tokens, "min_new_tokens": sampling.min_tokens,
        "pad_token_id": pad_id, "do_sample": not greedy,
        # Greedy samples are all the same: generate one and copy it (HF refuses n > 1 greedy).
        "num_return_sequences": 1 if greedy else num_samples,
        # Always explicit: vLLM applies no penalty unless asked, and a checkpoint's
        # generation_config must not add one of its own.
        "repetition_penalty": sampling.repetition_penalty,
    }
    if not greedy:  # the warpers only run when sampling; top_k must be explicit (HF's default is 50)
        kwargs.update(temperature=sampling.temperature, top_p=sampling.top_p,
                      top_k=max(sampling.top_k, 0))
    if sampling.stop:
        kwargs.update(stop_strings=list(sampling.stop), tokenizer=tokenizer)
    return kwargs


def with_adapters(model: Any, adapters: Sequence[Adapter], names: Mapping[str, str]) -> Any:
    """The base model wrapped by peft with every LoRA adapter loaded under its own name."""
    if not adapters:
        return model
    from peft import PeftModel

    for i, adapter in enumerate(adapters):
        name = names[str(adapter.path)]
        if i == 0:
            model = PeftModel.from_pretrained(model, str(adapter.path), adapter_name=name)
        else:
            model.load_adapter(str(adapter.path), adapter_name=name)
    return model


class HFEngine:
    name = "hf"
    scorer: Any = None  # scoring.Scorer, built by the first loglikelihood call

    def __init__(self, model_path: str, engine_cfg: Mapping[str, Any], seed: int,
                 adapters: Sequence[Adapter] = ()) -> None:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        device = resolve_device(engine_cfg.get("device"))
        dtype = resolve_dtype(engine_cfg.get("dtype", "auto"), device)
        trust = bool(engine_cfg.get("trust_remote_code", False))
        log.info("loading %s with Transformers on %s as %s", model_path, device, dtype)
        start = time.perf_counter()
        tokenizer = AutoTokenizer.from_pretrained(model_path, trust_remote_code=trust)
        model = AutoModelForCausalLM.from_pretrained(
            model_path, dtype=dtype, attn_implementation="sdpa", trust_remote_code=trust,
        ).to(device)
        self.adapter_names = {str(a.path): f"adapter{i}" for i, a in enumerate(adapters)}
        self._setup(with_adapters(model, adapters, self.adapter_names), tokenizer, engine_cfg,
                    seed, device)
        self.load_seconds = time.perf_counter() - start

    @classmethod
    def around(cls, model: Any, tokenizer: Any, engine_cfg: Mapping[str, Any],
               seed: int) -> "HFEngine":
        """An engine over a model already in memory (the bench's random-weight shapes)."""
        engine = cls.__new__(cls)
        engine.adapter_names = {}
        engine._setup(model, tokenizer, engine_cfg, seed, str(model.device))
        engine.load_seconds = 0.0
        return engine

    def _setup(self, model: Any, tokenizer: Any, engine_cfg: Mapping[str, Any], seed: int,
               device: str) -> None:
        import torch

        self.device = device
        self.model = model.eval()
        self.dtype = self.model.dtype
        self.attention = use_decode_attention(self.model)
        self.tokenizer = tokenizer
        budget = engine_cfg.get("max_batch_tokens")
        # None for auto: each sampling group is sized from free memory when it is planned.
        self.max_batch_tokens = None if budget in (None, "auto") else int(budget)
        self.budgets: dict[int, Budget] = {}  # auto's latest budget, by samples a prompt
        self.last_budget: Budget | None = None
        self.max_batch_size = int(engine_cfg.get("max_batch_size") or 64)
        cache = str(engine_cfg.get("cache") or "static")
        if cache not in ("dynamic", "static"):
            raise ValueError(f"engine.cache: {cache!r} is neither dynamic nor static")
        self.cache = cache_for(self.model.config, cache)
        # Samples draw from their own generators (seeded.py); the global seed only covers the
        # rest (dropout is off, so nothing should draw from it).
        torch.manual_seed(seed)
        self.seed = seed
        self.calls = 0  # engine calls so far: a retry round without request seeds draws anew
        self.batches = 0
        self.oom_splits = 0
        self.oom_skips = 0  # requests that ran out of memory alone
        self.oom_ceiling: int | None = None  # padded tokens a batch stays under after an OOM
        self.eos_ids = self._eos_ids()
        self.pad_id = self._pad_id()
        self.reader = RowReader(tokenizer, self.eos_ids, self.pad_id)
        self.stop_criteria: dict[tuple[str, ...], Any] = {}

    def _eos_ids(self) -> set[int]:
        """EOS ids of the generation config (what generate() stops on) and of the tokenizer."""
        ids = self.model.generation_config.eos_token_id
        ids = set(ids if isinstance(ids, (list, tuple)) else [ids] if ids is not None else [])
        if self.tokenizer.eos_token_id is not None:
            ids.add(self.tokenizer.eos_token_id)
        return ids

    def _pad_id(self) -> int:
        for pad in (self.tokenizer.pad_token_id, self.model.generation_config.pad_token_id):
            if pad is not None:
                return int(pad)
        return min(self.eos_ids)  # the usual stand-in: padding is masked out anyway

    def generate(self, requests: Iterable[GenerationRequest],
                 sampling: SamplingSettings) -> Iterator[Completion]:
        # Batches are planned over every request (longest first): the stream is taken whole.
        # A batch shares its sampling settings (jobs of datasets with their own presets).
        groups: dict[SamplingSettings, list[GenerationRequest]] = {}
        for r in requests:
            groups.setdefault(r.sampling_or(sampling), []).append(r)
        self.calls += 1
        for own, group in groups.items():
            batches = plan_batches(group, own.max_tokens, self._batch_tokens(own),
                                   self.max_batch_size)
            log.info("%d requests in %d batches", len(group), len(batches))
            for batch in batches:
                yield from self._run_fitting(batch, own)

    def _batch_tokens(self, sampling: SamplingSettings) -> int:
        """The explicit budget, or auto's for this group: its samples a prompt set how much of a
        token is prefill (shared) and how much KV cache (per sample), and memory is read now."""
        if self.max_batch_tokens is not None:
            return self.max_batch_tokens
        budget = auto_budget(self.model, self.device, sampling.num_samples)
        self.budgets[sampling.num_samples] = self.last_budget = budget
        log.info("max_batch_tokens: auto = %d for %d samples a prompt (%.1f GiB free, %d KV "
                 "bytes a token)", budget.max_batch_tokens, sampling.num_samples,
                 budget.free_bytes / 2**30, budget.kv_bytes_per_token)
        return budget.max_batch_tokens

    def _run_fitting(self, batch: list[GenerationRequest],
                     sampling: SamplingSettings) -> list[Completion]:
        """The batch, or its halves where it does not fit: an out-of-memory error splits it."""
        tokens = padded_tokens(batch, sampling.max_tokens)
        if len(batch) > 1 and self.oom_ceiling is not None and tokens > self.oom_ceiling:
            half = len(batch) // 2
            return (self._run_fitting(batch[:half], sampling)
                    + self._run_fitting(batch[half:], sampling))
        try:
            return self._run_batch(batch, sampling)
        except RuntimeError as error:  # torch.OutOfMemoryError is one; cuBLAS raises plain ones
            if not is_out_of_memory(error):
                raise
            message = str(error).strip().splitlines()[0][:300]
        # Out of the except block: its traceback held the failed batch's tensors.
        release_memory()
        if len(batch) == 1:  # nothing left to split: this item is skipped, the others go on
            return [self._skipped(batch[0], tokens, message)]
        log.warning("out of memory on a batch of %d prompts (%d padded tokens): split in halves "
                    "and retried", len(batch), tokens)
        self.oom_splits += 1
        self.oom_ceiling = min(self.oom_ceiling or tokens, tokens // 2)
        return self._run_fitting(batch, sampling)

    def _skipped(self, request: GenerationRequest, tokens: int, message: str) -> Completion:
        """A request that does not fit even alone: no samples, and why (the pipeline lists it in
        skipped_items)."""
        reason = (f"out of memory alone ({tokens} padded tokens; lower sampling.max_tokens or "
                  f"model.max_model_len): {message}")
        log.warning("request %s skipped: %s", request.request_id, reason)
        self.oom_skips += 1
        return Completion(request.request_id, texts=(), finish_reasons=(), output_tokens=(),
                          prompt_tokens=len(request.token_ids), error=reason)

    def _run_batch(self, batch: list[GenerationRequest],
                   sampling: SamplingSettings) -> list[Completion]:
        import torch

        n = batch[0].num_samples
        ids, mask = (t.to(self.device) for t in left_padded(batch, self.pad_id))
        width = ids.shape[1]
        kwargs = self._batch_kwargs(generate_kwargs(sampling, n, self.tokenizer, self.pad_id),
                                    batch, sampling, ids, mask)
        start = time.perf_counter()
        with torch.inference_mode(), self._adapter(batch[0].adapter):
            out = self._generate(ids, mask, kwargs)
        self.batches += 1
        log.debug("batch %d: %d prompts x %d samples, width %d, %.1f s", self.batches,
                  len(batch), n, width, time.perf_counter() - start)
        return self._completions(batch, out[:, width:], n, sampling)

    def _completions(self, batch: list[GenerationRequest], generated: Any, n: int,
                     sampling: SamplingSettings) -> list[Completion]:
        return self.reader.completions(batch, generated, n, sampling)

    def _batch_kwargs(self, kwargs: dict[str, Any], batch: list[GenerationRequest],
                      sampling: SamplingSettings, ids: Any, mask: Any) -> dict[str, Any]:
        """generate()'s arguments for this batch: the seeded sampler, the stop criteria."""
        from transformers import StoppingCriteriaList

        stops = tuple(kwargs.pop("stop_strings", ()))
        kwargs.pop("tokenizer", None)
        if stops:  # built once: its tables over the vocabulary take a while
            if stops not in self.stop_criteria:
                from transformers import StopStringCriteria

                self.stop_criteria[stops] = StopStringCriteria(self.tokenizer, list(stops))
            kwargs["stopping_criteria"] = StoppingCriteriaList([self.stop_criteria[stops]])
        if not kwargs["do_sample"]:
            return kwargs
        # Sampling through per-row streams: a row's samples never depend on its batch.
        from inference_hf.seeded import SeededSampler, row_seeds, seeded_kwargs

        n = kwargs["num_return_sequences"]
        sampler = SeededSampler(row_seeds(batch, self.seed, self.calls, n), sampling,
                                ids.repeat_interleave(n, 0), mask.repeat_interleave(n, 0))
        return seeded_kwargs(kwargs, sampler)

    def _generate(self, ids: Any, mask: Any, kwargs: dict[str, Any]) -> Any:
        """generate(); for n samples per prompt, each prompt is prefilled once and its KV cache
        copied n times (num_return_sequences would prefill n copies of it)."""
        n = kwargs["num_return_sequences"]
        kwargs = {**kwargs, "num_return_sequences": 1}  # rows copied here, as it would
        if self.cache == "static":  # never compiled behind our back (each batch shape would be)
            kwargs["disable_compile"] = True
        if n == 1 or ids.shape[1] < 2:
            # generate() refuses n > 1 greedy: the rows are copied here either way.
            if self.cache == "static":
                kwargs["cache_implementation"] = "static"
            return self._decode(ids.repeat_interleave(n, 0), mask.repeat_interleave(n, 0),
                                kwargs, None)
        cache = self._prefill(ids, mask, n, kwargs["max_new_tokens"])
        return self._decode(ids.repeat_interleave(n, 0), mask.repeat_interleave(n, 0), kwargs,
                            cache)

    def _prefill(self, ids: Any, mask: Any, n: int, max_new_tokens: int) -> Any:
        """The prompts' KV cache for n rows each (kv_cache.py); a method for the bench to time."""
        return prefill(self.model, ids, mask, n, max_new_tokens, self.cache)

    def _decode(self, ids: Any, mask: Any, kwargs: dict[str, Any], cache: Any) -> Any:
        """generate() from the prompts (and their cache, if prefilled): the decode steps."""
        if cache is not None:
            kwargs = {**kwargs, "past_key_values": cache}
        return self.model.generate(input_ids=ids, attention_mask=mask, **kwargs)

    def _adapter(self, adapter: str | None) -> ContextManager[Any]:
        """Switch the peft model to this batch's adapter, or switch adapters off for the base."""
        if not self.adapter_names:
            return nullcontext()
        if adapter is None:
            return self.model.disable_adapter()
        self.model.set_adapter(self.adapter_names[adapter])
        return nullcontext()

    def loglikelihood(self, requests: Iterable[ScoringRequest]) -> Iterator[TokenScores]:
        """One forward per length-sorted batch, the LM head at the target positions only."""
        from inference_hf.scoring import Scorer

        if self.scorer is None:
            self.scorer = Scorer(self)
        yield from self.scorer.score(requests)

    def stats(self) -> dict[str, Any]:
        last = self.last_budget.max_batch_tokens if self.last_budget else None
        scoring = self.scorer.stats() if self.scorer is not None else {}
        return {**scoring, "batches": self.batches,
                "max_batch_tokens": self.max_batch_tokens or last,
                # auto: the budget of each samples-a-prompt group, as last sized
                "max_batch_tokens_auto": {str(n): b.as_dict() for n, b in self.budgets.items()}
                or None,
                "oom_splits": self.oom_splits, "oom_skips": self.oom_skips,
                "max_batch_size": self.max_batch_size, "device": self.device,
                "dtype": str(self.dtype).removeprefix("torch."), "attention": self.attention,
                # Each sample draws from its own generator (seeded.py): batch-independent draws.
                "per_request_seeds": True}

    def close(self) -> None:
        self.model = None
        release_memory()
