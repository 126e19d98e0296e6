"""Random-weight models of a named shape, built on the device: a node sized before checkpoints come.

The layer counts, widths and heads are the real models'; the vocabulary is cut to the tokenizer the
bench carries (the embedded SmolLM2's 49,152), so its files can tokenize and decode. Weights are
N(0, 0.02): the text is noise, the time per step is the real shape's.
"""
from __future__ import annotations

from typing import Any

QWEN3 = {"rope_theta": 1_000_000.0, "rms_norm_eps": 1e-6, "max_position_embeddings": 40960,
         "head_dim": 128, "num_attention_heads": 32, "num_key_value_heads": 8}
SHAPES: dict[str, dict[str, Any]] = {
    # Qwen3-8B and Qwen3-4B as published (config.json of Qwen/Qwen3-8B and Qwen/Qwen3-4B).
    "qwen3-8b": {**QWEN3, "num_hidden_layers": 36, "hidden_size": 4096,
                 "intermediate_size": 12288, "tie_word_embeddings": False},
    "qwen3-4b": {**QWEN3, "num_hidden_layers": 36, "hidden_size": 2560,
                 "intermediate_size": 9728, "tie_word_embeddings": True},
    # A 2-layer model of Qwen3's kind for the CPU: a step is mostly the 49k-wide head and sampling.
    "tiny": {"num_hidden_layers": 2, "hidden_size": 128, "intermediate_size": 512,
             "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 32,
             "max_position_embeddings": 8192, "tie_word_embeddings": True},
}


def random_model(shape: str, vocab_size: int, device: str, dtype: Any) -> Any:
    """A Qwen3 causal LM of `shape` with N(0, 0.02) weights, built directly on `device`."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.for_model("qwen3", vocab_size=vocab_size, **SHAPES[shape])
    config._attn_implementation = "sdpa"
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype, attn_implementation="sdpa")
    with torch.no_grad():
        for param in model.parameters():
            param.normal_(0.0, 0.02)
    return model.eval()
