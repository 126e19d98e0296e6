"""Sampling whose randomness belongs to each sample, not to the batch it happens to run in.

generate()'s own sampler draws from one global torch generator: a row's tokens then depend on
which rows share its batch and on every batch before it, so a resumed, sharded or replicated
run draws other samples than an uninterrupted one. Here every row (one sample of one request)
has its own torch.Generator, seeded from the request's seed and the sample's index, and
`SeededSampler` (a LogitsProcessor) applies temperature, top-k and top-p as vLLM does, draws
the row's token with the row's own generator and returns a mask that leaves only that token;
generate() itself runs greedy and so just takes it.
"""
from __future__ import annotations

import hashlib
from typing import Any, Sequence

from transformers import LogitsProcessor

from inference_core.engine import GenerationRequest, SamplingSettings


def derive_seed(*parts: object) -> int:
    """A 63-bit seed from any parts; neighbouring inputs give unrelated streams."""
    text = "/".join(str(p) for p in parts).encode("utf-8")
    return int.from_bytes(hashlib.blake2b(text, digest_size=8).digest(), "big") >> 1


def request_seed(request: GenerationRequest, run_seed: int, round_: int) -> int:
    """The pipeline's per-request seed (run seed + location + retry round) when it sets one.

    Without it, the prompt's own tokens stand in for the location: the same prompt draws the same
    samples in any batch, and each engine call (`round_`, a retry) draws new ones.
    """
    seed = getattr(request, "seed", None)
    if seed is not None:
        return int(seed)
    return derive_seed(run_seed, round_, hashlib.sha256(
        repr(tuple(request.token_ids)).encode()).hexdigest())


def row_seeds(batch: Sequence[GenerationRequest], run_seed: int, round_: int, n: int) -> list[int]:
    """One seed per generated row, in generate()'s row order: request i, sample j at i*n + j."""
    return [derive_seed(request_seed(r, run_seed, round_), j) for r in batch for j in range(n)]


class SeededSampler(LogitsProcessor):
    """LogitsProcessor: vLLM-style temperature / top-k / top-p, one generator per row."""

    def __init__(self, seeds: Sequence[int], sampling: SamplingSettings, device: Any) -> None:
        import torch

        self.generators = [torch.Generator(device=device).manual_seed(s) for s in seeds]
        self.temperature = sampling.temperature
        self.top_k = sampling.top_k
        self.top_p = sampling.top_p

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        import torch

        logits = scores.float() / self.temperature
        if 0 < self.top_k < logits.shape[-1]:
            kth = torch.topk(logits, self.top_k, dim=-1).values[..., -1:]
            logits = logits.masked_fill(logits < kth, float("-inf"))
        probs = torch.softmax(logits, dim=-1)
        if self.top_p < 1.0:
            ordered, order = probs.sort(dim=-1, descending=True)
            # Drop a token once the more likely ones already hold top_p (the first always stays).
            drop = ordered.cumsum(-1) - ordered > self.top_p
            probs = probs.scatter(-1, order, ordered.masked_fill(drop, 0.0))
        # Inverse CDF with one uniform per row from the row's generator: batch-independent.
        cdf = probs.double().cumsum(-1)
        u = torch.stack([torch.rand((), generator=g, device=probs.device, dtype=torch.float64)
                         for g in self.generators])
        tokens = torch.searchsorted(cdf, (u * cdf[:, -1]).unsqueeze(-1)).clamp(
            max=probs.shape[-1] - 1)
        out = torch.full_like(scores, float("-inf"))
        return out.scatter(-1, tokens, 0.0)


def seeded_kwargs(kwargs: dict[str, Any], sampler: SeededSampler) -> dict[str, Any]:
    """generate() arguments that sample through `sampler`: greedy over its one-token mask."""
    out = {k: v for k, v in kwargs.items() if k not in ("temperature", "top_p", "top_k")}
    out.update(do_sample=False, logits_processor=[sampler])
    return out
