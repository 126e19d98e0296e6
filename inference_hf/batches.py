"""Batches for padded generate() calls: longest prompts first, filled up to a token budget."""
from __future__ import annotations

import logging
from typing import Any, Sequence

from inference_core.engine import GenerationRequest

log = logging.getLogger(__name__)


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


def padded_tokens(batch: Sequence[GenerationRequest], max_tokens: int) -> int:
    """What plan_batches counts: rows x (longest prompt + max_tokens) x samples."""
    width = max(len(r.token_ids) for r in batch) + max_tokens
    return len(batch) * width * batch[0].num_samples


def left_padded(batch: Sequence[GenerationRequest], pad_id: int) -> tuple[Any, Any]:
    """(ids, attention mask), (prompts, longest): every prompt ends where generation starts."""
    import torch

    width = max(len(r.token_ids) for r in batch)
    ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, r in enumerate(batch):
        ids[i, width - len(r.token_ids):] = torch.tensor(r.token_ids, dtype=torch.long)
        mask[i, width - len(r.token_ids):] = 1
    return ids, mask
