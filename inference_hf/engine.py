"""Transformers behind the engine interface: length-sorted, left-padded batches through generate().

Unlike vLLM there is no continuous batching, so the engine plans its own batches: longest prompts
first (a batch then pads little, and an out-of-memory batch fails at the start, not hours in),
filled up to a token budget, and yields every request of a batch as soon as that batch is done.
"""
from __future__ import annotations

import gc
import logging
import os
import time
from contextlib import nullcontext
from typing import Any, ContextManager, Iterable, Iterator, Mapping, Sequence

from inference_core.model.adapters import Adapter
from inference_core.engine import Completion, GenerationRequest, SamplingSettings

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


def plan_batches(requests: Sequence[GenerationRequest], max_tokens: int, max_batch_tokens: int,
                 max_batch_size: int, min_fill: float = 0.5) -> list[list[GenerationRequest]]:
    """Longest prompts first, one num_samples per batch (num_return_sequences is per call).

    The budget counts the padded size, batch x (longest prompt + max_tokens) x samples, because
    that is what the KV cache holds; it bounds the plain per-request sum from above. A prompt
    shorter than `min_fill` of the batch's longest starts a new batch: padding is computed too.
    """
    groups: dict[tuple[int, str | None], list[GenerationRequest]] = {}
    for r in sorted(requests, key=lambda r: len(r.token_ids), reverse=True):
        groups.setdefault((r.num_samples, r.adapter), []).append(r)  # one adapter per batch too
    batches: list[list[GenerationRequest]] = []
    for (n, _), group in groups.items():
        batch: list[GenerationRequest] = []
        for r in group:
            width = len((batch or [r])[0].token_ids) + max_tokens
            if batch and (len(batch) >= max_batch_size
                          or (len(batch) + 1) * width * n > max_batch_tokens
                          or len(r.token_ids) + max_tokens < min_fill * width):
                batches.append(batch)
                batch = []
            if not batch and (len(r.token_ids) + max_tokens) * n > max_batch_tokens:
                log.warning("request %s alone exceeds max_batch_tokens=%d; running it by itself",
                            r.request_id, max_batch_tokens)
            batch.append(r)
        if batch:
            batches.append(batch)
    batches.sort(key=lambda b: len(b[0].token_ids), reverse=True)
    return batches


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


def first_stop(text: str, stops: Sequence[str]) -> int | None:
    hits = [i for i in (text.find(s) for s in stops if s) if i >= 0]
    return min(hits) if hits else None


class HFEngine:
    name = "hf"

    def __init__(self, model_path: str, engine_cfg: Mapping[str, Any], seed: int,
                 adapters: Sequence[Adapter] = ()) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.device = resolve_device(engine_cfg.get("device"))
        self.dtype = resolve_dtype(engine_cfg.get("dtype", "auto"), self.device)
        self.max_batch_tokens = int(engine_cfg.get("max_batch_tokens") or 65536)
        self.max_batch_size = int(engine_cfg.get("max_batch_size") or 64)
        trust = bool(engine_cfg.get("trust_remote_code", False))
        # Samples draw from their own generators (seeded.py); the global seed only covers the
        # rest (dropout is off, so nothing should draw from it).
        torch.manual_seed(seed)
        self.seed = seed
        self.calls = 0  # engine calls so far: a retry round without request seeds draws anew
        log.info("loading %s with Transformers on %s as %s", model_path, self.device, self.dtype)
        start = time.perf_counter()
        self.tokenizer = AutoTokenizer.from_pretrained(model_path, trust_remote_code=trust)
        self.model = AutoModelForCausalLM.from_pretrained(
            model_path, dtype=self.dtype, attn_implementation="sdpa", trust_remote_code=trust,
        ).to(self.device)
        self.adapter_names = {str(a.path): f"adapter{i}" for i, a in enumerate(adapters)}
        self.model = with_adapters(self.model, adapters, self.adapter_names).eval()
        self.load_seconds = time.perf_counter() - start
        self.eos_ids = self._eos_ids()
        self.pad_id = self._pad_id()
        self.batches = 0

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
        requests = list(requests)
        batches = plan_batches(requests, sampling.max_tokens, self.max_batch_tokens,
                               self.max_batch_size)
        log.info("%d requests in %d batches", len(requests), len(batches))
        self.calls += 1
        for batch in batches:
            yield from self._run_batch(batch, sampling)

    def _run_batch(self, batch: list[GenerationRequest],
                   sampling: SamplingSettings) -> list[Completion]:
        import torch

        n = batch[0].num_samples
        width = len(batch[0].token_ids)  # longest first
        ids = torch.full((len(batch), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for i, r in enumerate(batch):  # left padding: every prompt ends where generation starts
            ids[i, width - len(r.token_ids):] = torch.tensor(r.token_ids, dtype=torch.long)
            mask[i, width - len(r.token_ids):] = 1
        kwargs = self._seeded(generate_kwargs(sampling, n, self.tokenizer, self.pad_id), batch,
                              sampling, n)
        start = time.perf_counter()
        with torch.inference_mode(), self._adapter(batch[0].adapter):
            out = self._generate(ids.to(self.device), mask.to(self.device), kwargs)
        self.batches += 1
        log.debug("batch %d: %d prompts x %d samples, width %d, %.1f s", self.batches,
                  len(batch), n, width, time.perf_counter() - start)
        rows = out[:, width:].tolist()
        per_request = kwargs["num_return_sequences"]
        return [self._completion(r, rows[i * per_request:(i + 1) * per_request], n, sampling)
                for i, r in enumerate(batch)]

    def _seeded(self, kwargs: dict[str, Any], batch: list[GenerationRequest],
                sampling: SamplingSettings, n: int) -> dict[str, Any]:
        """Sampling through per-row generators: a row's samples never depend on its batch."""
        if not kwargs["do_sample"]:
            return kwargs
        from inference_hf.seeded import SeededSampler, row_seeds, seeded_kwargs

        sampler = SeededSampler(row_seeds(batch, self.seed, self.calls, n), sampling, self.device)
        return {**seeded_kwargs(kwargs, sampler), "num_return_sequences": n}

    def _generate(self, ids: Any, mask: Any, kwargs: dict[str, Any]) -> Any:
        """generate(); for n samples per prompt, each prompt is prefilled once and its KV cache
        copied n times (num_return_sequences would prefill n copies of it)."""
        n = kwargs["num_return_sequences"]
        if n == 1 or ids.shape[1] < 2:
            # Rows copied here, as num_return_sequences would: generate() refuses n > 1 greedy.
            return self.model.generate(input_ids=ids.repeat_interleave(n, 0),
                                       attention_mask=mask.repeat_interleave(n, 0),
                                       **{**kwargs, "num_return_sequences": 1})
        from transformers import DynamicCache

        cache = DynamicCache(config=self.model.config)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)  # left padding: count real tokens only
        # All but the last prompt token: generate() starts from it with the cache filled.
        self.model(input_ids=ids[:, :-1], attention_mask=mask[:, :-1],
                   position_ids=positions[:, :-1], past_key_values=cache, use_cache=True,
                   logits_to_keep=1)
        cache.batch_repeat_interleave(n)
        return self.model.generate(input_ids=ids.repeat_interleave(n, 0),
                                   attention_mask=mask.repeat_interleave(n, 0),
                                   past_key_values=cache, **{**kwargs, "num_return_sequences": 1})

    def _adapter(self, adapter: str | None) -> ContextManager[Any]:
        """Switch the peft model to this batch's adapter, or switch adapters off for the base."""
        if not self.adapter_names:
            return nullcontext()
        if adapter is None:
            return self.model.disable_adapter()
        self.model.set_adapter(self.adapter_names[adapter])
        return nullcontext()

    def _completion(self, request: GenerationRequest, rows: list[list[int]], n: int,
                    sampling: SamplingSettings) -> Completion:
        samples = [self._finish(row, sampling) for row in rows]
        samples = (samples * n)[:n]  # a greedy request generated one sample for all n
        return Completion(
            request_id=request.request_id,
            texts=tuple(s[0] for s in samples),
            finish_reasons=tuple(s[1] for s in samples),
            output_tokens=tuple(s[2] for s in samples),
            prompt_tokens=len(request.token_ids),
            stop_reasons=tuple(s[3] for s in samples),
        )

    def _finish(self, row: list[int], sampling: SamplingSettings,
                ) -> tuple[str, str, int, str | None]:
        """(text, finish reason, output tokens, stop string) as vLLM reports them for one row."""
        # A row ends at its EOS or, once stopped while others went on, at the padding after it.
        end = next((i for i, t in enumerate(row) if t in self.eos_ids or t == self.pad_id),
                   len(row))
        text = self._decode(row[:end])
        cut = first_stop(text, sampling.stop)
        if cut is not None:  # vLLM leaves the stop string out of the text but counts its tokens
            stop = next(s for s in sampling.stop if s and text.startswith(s, cut))
            return text[:cut], "stop", self._tokens_to_stop(row[:end], sampling.stop), stop
        if end >= sampling.max_tokens:
            return text, "length", end, None
        # vLLM counts the EOS token among the output tokens.
        return text, "stop", end + (1 if end < len(row) and row[end] in self.eos_ids else 0), None

    def _tokens_to_stop(self, tokens: list[int], stops: Sequence[str]) -> int:
        """The fewest leading tokens whose text holds a stop string (binary search over decodes)."""
        low, high = 1, len(tokens)
        while low < high:
            mid = (low + high) // 2
            if first_stop(self._decode(tokens[:mid]), stops) is None:
                low = mid + 1
            else:
                high = mid
        return high

    def _decode(self, tokens: list[int]) -> str:
        return self.tokenizer.decode(tokens, skip_special_tokens=True)

    def stats(self) -> dict[str, Any]:
        return {"batches": self.batches, "max_batch_tokens": self.max_batch_tokens,
                "max_batch_size": self.max_batch_size, "device": self.device,
                "dtype": str(self.dtype).removeprefix("torch."),
                # Each sample draws from its own generator (seeded.py): batch-independent.
                "per_request_seeds": True}

    def close(self) -> None:
        import torch

        self.model = None
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
