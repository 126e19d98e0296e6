"""`engine.max_batch_tokens: auto`: the padded-token budget of a batch, sized from free memory.

A batch of the budget's size holds that many tokens of KV cache (batch x (prompt + max_tokens)
x samples) and, while its prompts are prefilled, the activations of their tokens (a prompt is
prefilled once for all its samples, so those count once per `num_samples` budget tokens).
Free memory is read after the weights are on the device: on a GPU what the driver reports free
plus what PyTorch's allocator holds unused, on a CPU the memory the kernel reports available.
A margin is left for what the estimate does not count (the allocator's fragments, the cache's
growth by copying one layer at a time, logits, the tokenizer, the rest of the process).
"""
from __future__ import annotations

import gc
from dataclasses import asdict, dataclass
from typing import Any

# Share of free memory left unused; the rest is split between KV cache and prefill activations.
MARGIN = 0.15
# Never below one typical row (a 2k-token prompt and its output), whatever memory says.
FLOOR = 4096


@dataclass(frozen=True)
class Budget:
    max_batch_tokens: int
    free_bytes: int
    weight_bytes: int
    kv_bytes_per_token: int
    prefill_bytes_per_token: int
    margin: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def kv_bytes_per_token(config: Any, dtype_bytes: int) -> int:
    """Keys and values of one token in every layer: 2 x layers x KV heads x head dim x dtype."""
    text = config.get_text_config(decoder=True) if hasattr(config, "get_text_config") else config
    heads = text.num_attention_heads
    kv_heads = getattr(text, "num_key_value_heads", None) or heads
    head_dim = getattr(text, "head_dim", None) or text.hidden_size // heads
    return 2 * text.num_hidden_layers * kv_heads * head_dim * dtype_bytes


def prefill_bytes_per_token(config: Any, dtype_bytes: int) -> int:
    """Activations of one prompt token inside one layer at its widest, as Transformers' eager
    layers hold them: the residual stream and its norm, queries, keys and values repeated to
    every head, the attention output, and the MLP's gate, up and product."""
    text = config.get_text_config(decoder=True) if hasattr(config, "get_text_config") else config
    heads = text.num_attention_heads
    head_dim = getattr(text, "head_dim", None) or text.hidden_size // heads
    width = 4 * text.hidden_size + 3 * heads * head_dim + 3 * text.intermediate_size
    return width * dtype_bytes


def free_bytes(device: str) -> int:
    import torch

    if device.startswith("cuda"):
        free, _ = torch.cuda.mem_get_info(torch.device(device))
        return int(free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device))
    import psutil

    return int(psutil.virtual_memory().available)


def auto_budget(model: Any, device: str, num_samples: int) -> Budget:
    """The largest padded-token budget whose KV cache and prefill fit free memory, less MARGIN."""
    dtype_bytes = model.dtype.itemsize
    kv = kv_bytes_per_token(model.config, dtype_bytes)
    prefill = prefill_bytes_per_token(model.config, dtype_bytes)
    free = free_bytes(device)
    per_token = kv + prefill / max(num_samples, 1)
    tokens = int(free * (1 - MARGIN) / per_token)
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    return Budget(max(tokens, FLOOR), free, weights, kv, prefill, MARGIN)


# What an allocation failure says when it comes as a plain RuntimeError: cuBLAS/cuDNN handles
# ("CUDA error: CUBLAS_STATUS_ALLOC_FAILED when calling `cublasCreate(handle)`"), CUDA calls
# outside the caching allocator ("CUDA error: out of memory"), the CPU allocator.
ALLOCATION_FAILURES = ("ALLOC_FAILED", "out of memory", "can't allocate memory")


def is_out_of_memory(error: BaseException) -> bool:
    """Whether `error` says an allocation did not fit (torch >= 2.5: torch.OutOfMemoryError, the
    same class as torch.cuda.OutOfMemoryError; or a RuntimeError saying so)."""
    import torch

    if isinstance(error, getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError)):
        return True
    text = str(error)
    return isinstance(error, RuntimeError) and any(s in text for s in ALLOCATION_FAILURES)


def release_memory() -> None:
    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
