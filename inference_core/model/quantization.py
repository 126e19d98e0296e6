"""What a checkpoint's config.json says about its quantization, in a few engine-neutral keys.

Read without loading weights, for the run summary (`quantization`: null when unquantized) and
for `inference_core.quantize`'s group-size check.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson

RECIPE_FILE = "recipe.yaml"  # llm-compressor writes the recipe it applied beside the weights


def read_config(model_path: str | Path) -> dict[str, Any]:
    path = Path(model_path) / "config.json"
    return orjson.loads(path.read_bytes()) if path.is_file() else {}


def quantization_info(model_path: str | Path) -> dict[str, Any] | None:
    """{method, algorithm, bits, group_size, symmetric, format} of the checkpoint, or None."""
    qc = read_config(model_path).get("quantization_config")
    if not isinstance(qc, dict):
        return None
    method = str(qc.get("quant_method") or "unknown")
    info: dict[str, Any] = {"method": method, "algorithm": None, "bits": qc.get("bits"),
                            "group_size": qc.get("group_size"), "symmetric": None,
                            "format": qc.get("format") or qc.get("version")}
    if "zero_point" in qc:  # AutoAWQ's spelling: zero points mean asymmetric
        info["symmetric"] = not qc["zero_point"]
    elif "sym" in qc:  # GPTQ's
        info["symmetric"] = bool(qc["sym"])
    if method == "awq":
        info["algorithm"] = "awq"
    elif method == "gptq":
        info["algorithm"] = "gptq"
    groups = qc.get("config_groups") or {}
    weights = next((g.get("weights") for g in groups.values()
                    if isinstance(g, dict) and g.get("weights")), None)
    if weights:  # compressed-tensors (llm-compressor): the first group's weight scheme
        info.update(bits=weights.get("num_bits"), group_size=weights.get("group_size"),
                    symmetric=weights.get("symmetric"))
        info["activations"] = "quantized" if any(
            isinstance(g, dict) and g.get("input_activations") for g in groups.values()) else None
        recipe = Path(model_path) / RECIPE_FILE
        if recipe.is_file():  # which algorithm chose the weights (AWQ, GPTQ or plain rounding)
            text = recipe.read_text(errors="replace")
            info["algorithm"] = ("awq" if "AWQModifier" in text else
                                 "gptq" if "GPTQModifier" in text else "rtn")
    return info


def linear_input_sizes(model_path: str | Path) -> dict[str, int]:
    """Input widths of the transformer's linear layers (a group must divide each of them)."""
    data = read_config(model_path)
    text = data.get("text_config") or data  # multimodal checkpoints nest the LM's config
    sizes: dict[str, int] = {}
    hidden = text.get("hidden_size")
    if hidden:
        sizes["hidden_size"] = int(hidden)
        heads = text.get("num_attention_heads")
        head_dim = text.get("head_dim") or (int(hidden) // int(heads) if heads else None)
        if heads and head_dim:
            sizes["num_attention_heads x head_dim"] = int(heads) * int(head_dim)
    for key in ("intermediate_size", "moe_intermediate_size", "shared_expert_intermediate_size"):
        if text.get(key):
            sizes[key] = int(text[key])
    return sizes
