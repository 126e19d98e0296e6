"""SDPA whose decode steps read each KV head once, padding mask or not.

Transformers' `sdpa` attention copies every key/value head once per query head (`repeat_kv`)
whenever an attention mask is passed, and a left-padded batch always passes one: with Qwen3's
32 query and 8 KV heads every decode step then writes the whole KV cache four times over.
For a one-token query the heads that share a KV head can instead be laid along the query axis,
(batch, kv_heads, group, head_dim), which is plain SDPA with a broadcast mask and no copy.
Prefill (more than one query token) goes to Transformers' own `sdpa`.

Registered under its own name through Transformers' AttentionInterface (its documented way to
add an attention function); masks are built as for `sdpa`.
"""
from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger(__name__)

NAME = "sdpa_gqa_decode"


def gqa_decode_attention(module: Any, query: Any, key: Any, value: Any, attention_mask: Any,
                         dropout: float = 0.0, scaling: float | None = None,
                         is_causal: bool | None = None, **kwargs: Any) -> tuple[Any, None]:
    import torch
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    groups = getattr(module, "num_key_value_groups", 1)
    if (query.shape[2] != 1 or groups == 1 or dropout or kwargs.get("position_bias") is not None
            or kwargs.get("cache") is not None or kwargs.get("output_attentions")):
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout,
                                      scaling=scaling, is_causal=is_causal, **kwargs)
    batch, heads, _, dim = query.shape
    # Query head h reads KV head h // groups (repeat_kv's order), so a view groups them.
    folded = query.reshape(batch, heads // groups, groups, dim)
    out = torch.nn.functional.scaled_dot_product_attention(folded, key, value,
                                                           attn_mask=attention_mask, scale=scaling)
    # sdpa_attention_forward's layout: (batch, query length, heads, head_dim).
    return out.reshape(batch, heads, 1, dim).transpose(1, 2).contiguous(), None


def register() -> str:
    """Make NAME known to Transformers (idempotent); returns it for `set_attn_implementation`."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register(NAME, gqa_decode_attention)
    AttentionMaskInterface.register(NAME, sdpa_mask)
    return NAME


def use_decode_attention(model: Any) -> str:
    """Switch the model to the GQA decode attention (attention.py) where it takes it."""
    try:
        model.set_attn_implementation(register())
    except (AttributeError, KeyError, ValueError, NotImplementedError) as error:
        # Custom modelling code or an older Transformers: the model keeps its own.
        log.info("attention stays %s: %s", model.config._attn_implementation, error)
    return str(model.config._attn_implementation)
