"""Sampling whose randomness belongs to each sample, not to the batch it happens to run in.

generate()'s own sampler draws from one global torch generator: a row's tokens then depend on
which rows share its batch and on every batch before it, so a resumed, sharded or replicated
run draws other samples than an uninterrupted one. Here every row (one sample of one request)
has its own generator, seeded from the request's seed and the sample's index, and
`SeededSampler` (a LogitsProcessor) applies the repetition penalty, temperature, top-k and top-p
as vLLM does, picks the row's token by inverse CDF with the row's own uniform for this step and
returns a mask that leaves only that token; generate() itself runs greedy and so just takes it.

Speed (measured with `python -m inference_hf.bench`, docs/benchmarks.md): the uniforms of every
step are drawn when the batch starts, one CPU generator call per row, so a step makes no Python
loop over rows; the penalty is applied in place; and with top-k on, only the k best tokens are
sorted and summed, never the whole vocabulary.
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


def row_uniforms(seeds: Sequence[int], steps: int) -> Any:
    """(rows, steps) float64 uniforms, row i from a CPU generator seeded with seeds[i].

    CPU generators on every device: a row draws the same numbers on a CPU and on a GPU.
    """
    import torch

    return torch.stack([torch.rand(steps, dtype=torch.float64,
                                   generator=torch.Generator().manual_seed(s)) for s in seeds])


class SeededSampler(LogitsProcessor):
    """LogitsProcessor: vLLM-style penalty / temperature / top-k / top-p, one stream per row.

    `prompt_ids` are the rows' left-padded prompts, (rows, width): the step is read off the
    width, and the penalty counts a row's own prompt tokens, never its padding (as vLLM does; a
    padded row would otherwise be penalized for the pad token, and depend on its batch).
    """

    def __init__(self, seeds: Sequence[int], sampling: SamplingSettings, prompt_ids: Any,
                 prompt_mask: Any) -> None:
        import torch

        self.uniforms = row_uniforms(seeds, max(sampling.max_tokens, 1)).to(prompt_ids.device)
        self.prompt_width = prompt_ids.shape[1]
        # Padding stands in as the row's last prompt token (left padding: always a real one).
        self.penalized_prompt = torch.where(prompt_mask.bool(), prompt_ids, prompt_ids[:, -1:])
        self.temperature = sampling.temperature
        self.top_k = sampling.top_k
        self.top_p = sampling.top_p
        self.penalty = sampling.repetition_penalty

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        import torch

        if self.penalty != 1.0:  # HF's and vLLM's rule, on prompt and output tokens, in place
            ids = torch.cat([self.penalized_prompt, input_ids[:, self.prompt_width:]], dim=-1)
            seen = scores.gather(-1, ids)
            scores.scatter_(-1, ids, torch.where(seen < 0, seen * self.penalty,
                                                 seen / self.penalty))
        vocab = scores.shape[-1]
        if 0 < self.top_k < vocab:  # sorted, best first: top-p below needs no sort of its own
            logits, tokens = torch.topk(scores, self.top_k, dim=-1)
        elif self.top_p < 1.0:
            logits, tokens = scores.sort(dim=-1, descending=True)
        else:
            logits, tokens = scores, None
        probs = torch.softmax(logits.float() / self.temperature, dim=-1)
        if self.top_p < 1.0:
            # Drop a token once the more likely ones already hold top_p (the first always stays).
            probs = probs.masked_fill(probs.cumsum(-1) - probs > self.top_p, 0.0)
        # Inverse CDF with this step's uniform of each row: batch-independent.
        cdf = probs.double().cumsum(-1)
        step = min(input_ids.shape[1] - self.prompt_width, self.uniforms.shape[1] - 1)
        u = self.uniforms[:, step:step + 1] * cdf[:, -1:]
        picked = torch.searchsorted(cdf, u).clamp(max=cdf.shape[-1] - 1)
        if tokens is not None:
            picked = tokens.gather(-1, picked)
        # generate() gave this step's scores to the processors; nothing reads them afterwards.
        return scores.fill_(float("-inf")).scatter_(-1, picked, 0.0)


def seeded_kwargs(kwargs: dict[str, Any], sampler: SeededSampler) -> dict[str, Any]:
    """generate() arguments that sample through `sampler`: greedy over its one-token mask.

    The sampler applies the repetition penalty itself (before top-k), so generate() does not.
    """
    out = {k: v for k, v in kwargs.items() if k not in ("temperature", "top_p", "top_k")}
    out.update(do_sample=False, logits_processor=[sampler], repetition_penalty=1.0)
    return out
