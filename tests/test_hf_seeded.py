"""The seeded sampler (inference_hf/seeded.py) draws from the distribution Transformers' own
processors define: repetition penalty, temperature, top-k, top-p, in generate()'s order.

20,000 rows of one step's logits, each row its own seed (fixed, so the test is deterministic):
the share of rows that pick each token is the processors' probability of it within 0.012 (3.4
standard deviations of a share near 1/2, the widest), and a token they rule out is never picked.
"""
from __future__ import annotations

from typing import Any

import pytest

from inference_core.engine import SamplingSettings
from inference_hf.seeded import SeededSampler, derive_seed

ROWS = 20_000
VOCAB = 24
PAD = 5  # a likely token: a sampler that penalized padding would move its share


def step_logits() -> Any:
    import torch

    logits = torch.randn(VOCAB, generator=torch.Generator().manual_seed(3)) * 2
    logits[PAD] = logits.max() - 0.5
    return logits


def prompt_and_output(logits: Any) -> tuple[Any, Any, Any]:
    """(prompt ids, prompt mask, ids so far): a left-padded prompt of the two likeliest tokens
    (after PAD) and the least likely one, then one generated token."""
    import torch

    order = [int(t) for t in logits.argsort(descending=True) if int(t) != PAD]
    prompt = torch.tensor([PAD, PAD, order[0], order[1], order[-1]])
    mask = torch.tensor([0, 0, 1, 1, 1])
    ids = torch.cat([prompt, torch.tensor([order[2]])])
    return prompt, mask, ids


def processors_probs(sampling: SamplingSettings, logits: Any, prompt: Any, mask: Any,
                     ids: Any) -> Any:
    """Transformers' processors over the row's own tokens (its padding left out)."""
    import torch
    from transformers import (LogitsProcessorList, RepetitionPenaltyLogitsProcessor,
                              TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper)

    steps = LogitsProcessorList()
    if sampling.repetition_penalty != 1.0:
        steps.append(RepetitionPenaltyLogitsProcessor(sampling.repetition_penalty))
    steps.append(TemperatureLogitsWarper(sampling.temperature))
    if sampling.top_k > 0:
        steps.append(TopKLogitsWarper(sampling.top_k))
    if sampling.top_p < 1.0:
        steps.append(TopPLogitsWarper(sampling.top_p))
    own = ids[prompt.shape[0] - int(mask.sum()):][None]
    return torch.softmax(steps(own, logits[None].clone())[0], dim=-1)


def sampler_shares(sampling: SamplingSettings, logits: Any, prompt: Any, mask: Any,
                   ids: Any) -> Any:
    import torch

    seeds = [derive_seed(1234, row) for row in range(ROWS)]
    sampler = SeededSampler(seeds, sampling, prompt.repeat(ROWS, 1), mask.repeat(ROWS, 1))
    picked = sampler(ids.repeat(ROWS, 1), logits.repeat(ROWS, 1)).argmax(-1)
    return torch.bincount(picked, minlength=VOCAB).double() / ROWS


@pytest.mark.parametrize("temperature,top_k,top_p,penalty", [
    (1.0, -1, 1.0, 1.0),   # plain softmax
    (0.5, 5, 1.0, 1.0),    # top-k
    (1.5, -1, 0.7, 1.0),   # top-p
    (1.0, -1, 1.0, 2.0),   # repetition penalty, on positive and negative logits
    (0.7, 10, 0.85, 1.1),  # all four (the Chameleons preset, top-k inside the vocabulary)
])
def test_seeded_sampler_draws_transformers_distribution(temperature: float, top_k: int,
                                                        top_p: float, penalty: float) -> None:
    sampling = SamplingSettings(num_samples=1, temperature=temperature, top_p=top_p,
                                top_k=top_k, max_tokens=4, seed=0, repetition_penalty=penalty)
    logits = step_logits()
    prompt, mask, ids = prompt_and_output(logits)
    expected = processors_probs(sampling, logits, prompt, mask, ids).double()
    shares = sampler_shares(sampling, logits, prompt, mask, ids)
    assert (shares - expected).abs().max() < 0.012, (shares, expected)
    assert shares[expected == 0].sum() == 0  # ruled out is never drawn
    assert (expected > 0).sum() > 1  # more than one token in play
