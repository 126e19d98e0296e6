"""The KV cache of a batch's prompts, prefilled once and repeated for their n samples.

`engine.cache: static` preallocates every layer for the whole output (a decode step writes in
place, no concatenation). Transformers' StaticCache builds each layer from the model config's
layer types: a full-attention layer holds prompt + output, a sliding-window layer (Gemma-3's
local layers) only its window, rolled as tokens come. The prompts are prefilled straight into it,
so each layer keeps what its own rule says; copying a dynamic cache across would give a sliding
layer only its window while the positions go on counting the whole prompt.
"""
from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger(__name__)


def static_cache_fits(config: Any) -> bool:
    """Whether every layer of the model (`config`) gets a plain static layer, full or sliding
    window: the two whose rows `repeat_rows` knows how to repeat (other kinds, such as linear
    attention or indexed layers, keep state of their own)."""
    from transformers import StaticCache, StaticLayer, StaticSlidingWindowLayer

    try:
        layers = StaticCache(config=config, max_cache_len=1).layers
    except (KeyError, ValueError, TypeError):  # a layer type with no static class
        return False
    return all(type(layer) in (StaticLayer, StaticSlidingWindowLayer) for layer in layers)


def cache_for(config: Any, requested: str) -> str:
    """The cache the engine uses: static where the model allows it, else dynamic (logged)."""
    if requested == "static" and not static_cache_fits(config):
        log.info("engine.cache: static does not fit %s's layer types; using the dynamic cache",
                 getattr(config, "model_type", "the model"))
        return "dynamic"
    return requested


def prefill(model: Any, ids: Any, mask: Any, n: int, max_new_tokens: int, kind: str) -> Any:
    """A `kind` KV cache of every prompt token but the last, for n rows a prompt."""
    from transformers import DynamicCache, StaticCache

    if kind == "static":  # room for the whole output up front
        cache = StaticCache(config=model.config, max_cache_len=ids.shape[1] + max_new_tokens)
    else:
        cache = DynamicCache(config=model.config)
    positions = (mask.cumsum(-1) - 1).clamp(min=0)  # left padding: count real tokens only
    # All but the last prompt token: generate() starts from it with the cache filled.
    model(input_ids=ids[:, :-1], attention_mask=mask[:, :-1], position_ids=positions[:, :-1],
          past_key_values=cache, use_cache=True, logits_to_keep=1)
    repeat_rows(cache, n)
    return cache


def repeat_rows(cache: Any, n: int) -> None:
    """Every row n times over (rows i*n .. i*n+n-1 from row i), one layer at a time, so the
    prompts' cache and its copies are never both whole. Static layers have no
    batch_repeat_interleave of their own; their length counters are per layer, not per row."""
    if n == 1:
        return
    for layer in cache.layers:
        if hasattr(layer, "batch_repeat_interleave"):
            layer.batch_repeat_interleave(n)
            continue
        layer.keys = layer.keys.repeat_interleave(n, 0)
        layer.values = layer.values.repeat_interleave(n, 0)
        layer.batch_size = layer.keys.shape[0]
