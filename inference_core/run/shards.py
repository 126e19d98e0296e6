"""Split users across shards (Slurm jobs, torchrun ranks): deterministic, balanced by tokens."""
from __future__ import annotations

import heapq
from typing import Mapping

# Rough characters per token for the split's estimate (PromptBuilder.estimate_user): only the
# balance between shards depends on it, never a prompt.
CHARS_PER_TOKEN = {"en": 4.0, "zh": 1.5}


def assign_shards(user_tokens: Mapping[str, int], count: int) -> dict[str, int]:
    """{user_hash: shard index}. Largest users first onto the lightest shard (LPT scheduling).

    Only the users' ids and token counts decide it, so every shard computes the same split.
    """
    if count < 1:
        raise ValueError(f"shard count must be at least 1, got {count}")
    heap = [(0, index) for index in range(count)]
    owner: dict[str, int] = {}
    for user_hash, tokens in sorted(user_tokens.items(), key=lambda kv: (-kv[1], kv[0])):
        load, index = heapq.heappop(heap)
        owner[user_hash] = index
        heapq.heappush(heap, (load + tokens, index))
    return owner
