"""Timed runs of one batch: the engine's and a bare `model.generate()`'s, stage by stage.

Two kinds of run. A timed run synchronizes the device only between stages (inputs, prefill,
decode, texts), so the decode loop runs as it does in production. A breakdown run also
synchronizes around every model forward, sampler call and stop check, which slows the loop a
little but says where a step's time goes; its figures are per step too.
"""
from __future__ import annotations

import time
from collections import defaultdict
from contextlib import contextmanager
from typing import Any, Iterator, Sequence

from transformers import LogitsProcessor, StoppingCriteria, StoppingCriteriaList

from inference_core.engine import GenerationRequest, SamplingSettings
from inference_hf.batches import left_padded
from inference_hf.engine import HFEngine, generate_kwargs


class Clock:
    """Seconds by stage, the device synchronized at each boundary; counts of model forwards."""

    def __init__(self, device: str, per_call: bool) -> None:
        import torch

        self.sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
        self.per_call = per_call  # breakdown runs: time every forward, sampler, stop check
        self.seconds: dict[str, float] = defaultdict(float)
        self.forwards = 0
        self.first_forward_end: float | None = None

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        self.sync()
        start = time.perf_counter()
        try:
            yield
        finally:
            self.sync()
            self.seconds[name] += time.perf_counter() - start

    @contextmanager
    def forwards_of(self, model: Any, first_is_prefill: bool) -> Iterator[None]:
        """Count (and in breakdown runs time) every forward of `model` while inside."""
        started: list[float] = []

        def before(*_: Any) -> None:
            self.forwards += 1
            if self.per_call:
                self.sync()
                started.append(time.perf_counter())

        def after(*_: Any) -> None:
            if self.per_call:
                self.sync()
                prefill = first_is_prefill and self.forwards == 1
                name = "prefill_forward" if prefill else "step_forward"
                self.seconds[name] += time.perf_counter() - started.pop()
            if first_is_prefill and self.first_forward_end is None:
                self.sync()  # once: where a bare generate()'s prefill ends
                self.first_forward_end = time.perf_counter()

        hooks = [model.register_forward_pre_hook(before), model.register_forward_hook(after)]
        try:
            yield
        finally:
            for hook in hooks:
                hook.remove()


class TimedProcessor(LogitsProcessor):
    def __init__(self, inner: Any, clock: Clock, name: str) -> None:
        self.inner, self.clock, self.name = inner, clock, name

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        with self.clock.stage(self.name):
            return self.inner(input_ids, scores)


class TimedCriteria(StoppingCriteria):
    def __init__(self, inner: Any, clock: Clock) -> None:
        self.inner, self.clock = inner, clock

    def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
        with self.clock.stage("stop_criteria"):
            return self.inner(input_ids, scores, **kwargs)


def timed_criteria(criteria: Sequence[Any], clock: Clock) -> StoppingCriteriaList:
    return StoppingCriteriaList([TimedCriteria(c, clock) for c in criteria])


class TimedEngine(HFEngine):
    """The engine unchanged, its stages timed on `clock` (set before each run)."""

    clock: Clock

    def _batch_kwargs(self, kwargs: dict[str, Any], *args: Any) -> dict[str, Any]:
        with self.clock.stage("setup"):
            kwargs = super()._batch_kwargs(kwargs, *args)
        if self.clock.per_call:
            kwargs["logits_processor"] = [TimedProcessor(p, self.clock, "sampler")
                                          for p in kwargs.get("logits_processor", [])]
            if "stopping_criteria" in kwargs:
                kwargs["stopping_criteria"] = timed_criteria(kwargs["stopping_criteria"],
                                                             self.clock)
        return kwargs

    def _prefill(self, *args: Any) -> Any:
        with self.clock.stage("prefill"):
            return super()._prefill(*args)

    def _decode(self, ids: Any, mask: Any, kwargs: dict[str, Any], cache: Any) -> Any:
        self.clock.forwards = 0
        with self.clock.stage("decode"), self.clock.forwards_of(self.model, False):
            out = super()._decode(ids, mask, kwargs, cache)
        self.clock.seconds["steps"] = self.clock.forwards
        return out

    def _completions(self, *args: Any) -> Any:
        with self.clock.stage("texts"):
            return super()._completions(*args)


def run_engine(engine: TimedEngine, requests: list[GenerationRequest],
               sampling: SamplingSettings, per_call: bool) -> dict[str, Any]:
    """One engine batch of `requests` (the budget set so they make exactly one)."""
    engine.clock = clock = Clock(engine.device, per_call)
    engine.max_batch_tokens = 10**12
    engine.max_batch_size = len(requests)
    batches = engine.batches
    with clock.stage("wall"):
        completions = list(engine.generate(requests, sampling))
    assert engine.batches == batches + 1, "the bench's requests must make one batch"
    figures = dict(clock.seconds)
    steps = int(figures.pop("steps"))
    figures["inputs"] = figures["wall"] - sum(figures.get(k, 0.0) for k in
                                              ("setup", "prefill", "decode", "texts"))
    return summarize(figures, steps, sum(len(c.texts) for c in completions),
                     sum(sum(c.output_tokens) for c in completions))


def run_generate(engine: HFEngine, requests: list[GenerationRequest],
                 sampling: SamplingSettings, per_call: bool) -> dict[str, Any]:
    """The same rows through a bare `model.generate()`: its own sampler (num_return_sequences
    prefills every sample), stop strings, Transformers' `sdpa` attention and cache."""
    import torch

    model, tokenizer = engine.model, engine.tokenizer
    n = sampling.num_samples
    clock = Clock(engine.device, per_call)
    ids, mask = left_padded(requests, engine.pad_id)
    width = ids.shape[1]
    kwargs = generate_kwargs(sampling, n, tokenizer, engine.pad_id)
    if per_call and sampling.stop:  # the same criteria generate() builds, timed
        from transformers import StopStringCriteria

        stops = StopStringCriteria(tokenizer, kwargs.pop("stop_strings"))
        kwargs.pop("tokenizer")
        kwargs["stopping_criteria"] = timed_criteria([stops], clock)
    attention = model.config._attn_implementation
    model.set_attn_implementation("sdpa")
    try:
        with torch.inference_mode(), clock.forwards_of(model, True):
            with clock.stage("wall"):
                start = time.perf_counter()
                out = model.generate(input_ids=ids.to(engine.device),
                                     attention_mask=mask.to(engine.device), **kwargs)
            with clock.stage("texts"):
                texts = tokenizer.batch_decode(out[:, width:].cpu(), skip_special_tokens=True)
    finally:
        model.set_attn_implementation(attention)
    figures = dict(clock.seconds)
    prefill_end = clock.first_forward_end or start
    figures["prefill"] = prefill_end - start
    figures["decode"] = figures["wall"] - figures["prefill"]
    figures["wall"] += figures["texts"]
    # The prefill forward also yields the first token: the decode steps are the other forwards.
    steps = max(clock.forwards - 1, 1)
    generated = out[:, width:]
    tokens = int((generated != engine.pad_id).sum()) if generated.numel() else 0
    return summarize(figures, steps, len(texts), tokens)


def summarize(figures: dict[str, float], steps: int, samples: int,
              output_tokens: int) -> dict[str, Any]:
    out: dict[str, Any] = {k: round(v, 4) for k, v in sorted(figures.items())}
    out.update(steps=steps, samples=samples, output_tokens=output_tokens,
               step_s=round(figures["decode"] / steps, 5),
               samples_per_s=round(samples / figures["wall"], 3) if figures["wall"] else None)
    for name in ("step_forward", "sampler", "stop_criteria"):
        if name in figures:
            out[f"{name}_per_step_s"] = round(figures[name] / steps, 5)
    if "step_forward" in figures:  # the loop's own work: logits copy, argmax, cat, bookkeeping
        # (a bare generate()'s decode starts after its prefill forward; the engine's has none)
        loop = figures["decode"] - sum(
            figures.get(k, 0.0) for k in ("step_forward", "sampler", "stop_criteria"))
        out["loop_other_per_step_s"] = round(loop / steps, 5)
    return out
