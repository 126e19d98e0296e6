"""4-bit AWQ: group-size choice, calibration prompts, summary field, and a real quantize-and-run.

The engine test quantizes the embedded SmolLM2 with llm-compressor (2 prompts x 64 tokens, about
a minute on 2 CPU cores), runs it through `python -m inference_vllm` (one engine start) and the
Transformers engine, and checks that the text is not degenerate.
"""
from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from conftest import GPUS
from inference_core.compose import compose_config
from inference_core.config import ConfigError
from inference_core.engine import GenerationRequest, SamplingSettings
from inference_core.run.job import prepare_job
from inference_core.model.quantization import linear_input_sizes, quantization_info
from inference_core.evaluation.quant_quality import chrf_between, is_degenerate
from inference_core.quantize.calibrate import calibration_prompts, effective_group_size
from inference_core.rundir.writers import SUMMARY_FILE, iter_user_files, read_json
from inference_vllm.device_defaults import cpu_kernel_missing

REPO = Path(__file__).resolve().parent.parent
QUANT_PYTHON = REPO / ".venv-quant" / "bin" / "python"
SMOL_SIZES = {"hidden_size": 576, "num_attention_heads x head_dim": 576, "intermediate_size": 1536}


def compose_cfg(*overrides: str):
    return compose_config(*overrides, config_name="quantize")


def test_group_size_falls_back_for_smollm2(model_path: Path, caplog) -> None:
    assert linear_input_sizes(model_path) == SMOL_SIZES
    with caplog.at_level(logging.WARNING):
        assert effective_group_size(128, SMOL_SIZES) == 64
    assert "quant.group_size=128 does not divide" in caplog.text
    assert "hidden_size=576" in caplog.text
    assert effective_group_size(32, SMOL_SIZES) == 32
    assert effective_group_size(-1, SMOL_SIZES) == -1
    assert effective_group_size(128, {"hidden_size": 4096, "intermediate_size": 12288}) == 128
    with pytest.raises(ConfigError, match="quant.group_size=-1"):
        effective_group_size(128, {"hidden_size": 100})


def test_quantization_info_reads_both_formats(tmp_path: Path, model_path: Path) -> None:
    assert quantization_info(model_path) is None
    awq = tmp_path / "awq"
    awq.mkdir()
    (awq / "config.json").write_bytes(orjson.dumps({"quantization_config": {
        "quant_method": "awq", "bits": 4, "group_size": 128, "zero_point": True,
        "version": "gemm"}}))
    assert quantization_info(awq) == {"method": "awq", "algorithm": "awq", "bits": 4,
                                      "group_size": 128, "symmetric": False, "format": "gemm"}
    ct = tmp_path / "ct"
    ct.mkdir()
    (ct / "config.json").write_bytes(orjson.dumps({"quantization_config": {
        "quant_method": "compressed-tensors", "format": "pack-quantized", "config_groups": {
            "group_0": {"targets": ["Linear"], "input_activations": None, "weights": {
                "num_bits": 4, "group_size": 64, "symmetric": False}}}}}))
    (ct / "recipe.yaml").write_text("default_stage:\n  AWQModifier: {}\n")
    info = quantization_info(ct)
    assert (info["method"], info["algorithm"], info["bits"], info["group_size"],
            info["format"]) == ("compressed-tensors", "awq", 4, 64, "pack-quantized")


def test_degenerate_and_chrf() -> None:
    assert is_degenerate("rewrewrewrewrewrewrewrewrewrew")
    assert is_degenerate("\n\n\nnewnewnewnewnewnewnewnew\nnewnewnewnewnewnew\nnewnewnew")
    assert not is_degenerate("The capital of France is Paris, a city on the Seine.")
    assert not is_degenerate("hahaha")  # too short to judge
    assert chrf_between(["same text"], ["same text"]) == pytest.approx(100.0)
    assert chrf_between(["completely other"], ["same text"]) < 30


@pytest.mark.slow
def test_calibration_uses_the_jobs_own_prompts(model_path: Path) -> None:
    job = prepare_job(compose_cfg("dataset=DMSC", "ablation=profile_and_history"))
    calib = calibration_prompts(job, count=4, max_len=96)
    assert len(calib) == 4 and all(0 < len(ids) <= 96 for ids in calib)
    from transformers import AutoTokenizer

    text = AutoTokenizer.from_pretrained(str(model_path)).decode(calib[0])
    assert "<|im_start|>system" in text  # the chat template as the run renders it
    assert len(calibration_prompts(job, count=10_000, max_len=96)) < 10_000  # all there are


@pytest.mark.slow
def test_missing_tool_venv_is_one_line(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "inference_core.quantize", f"quant.python={tmp_path}/none",
         f"out={tmp_path}/q"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert "make install-quant" in result.stdout + result.stderr


NO_QUANT_VENV = pytest.mark.skipif(not QUANT_PYTHON.is_file(),
                                   reason="no .venv-quant (llm-compressor): run `make install-quant`")


@pytest.fixture(scope="module")
def quantized(tmp_path_factory) -> tuple[Path, str]:
    """The embedded model quantized once (tiny calibration set), and the command's log."""
    out = tmp_path_factory.mktemp("quantized") / "smol-awq"
    result = subprocess.run(
        [sys.executable, "-m", "inference_core.quantize", "quant.num_calibration=2",
         "quant.max_seq_len=64", f"out={out}"], cwd=REPO, capture_output=True, text=True,
        timeout=600)
    log_text = result.stdout + result.stderr
    assert result.returncode == 0, log_text[-3000:]
    return out, log_text


@pytest.mark.engine
@NO_QUANT_VENV
def test_quantize_then_generate(quantized, tmp_path: Path, model_path: Path, tokenizer) -> None:
    out, log_text = quantized
    for expected in ("calibration: 2 prompts", "size on disk:", "group size 64", "s AWQ"):
        assert expected in log_text
    info = quantization_info(out)
    assert (info["method"], info["algorithm"], info["bits"], info["group_size"]) == (
        "compressed-tensors", "awq", 4, 64)

    # vLLM (CPU build: its CPUWNA16 kernel) through the whole pipeline; one engine start.
    run_dir = tmp_path / "run"
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "inference_vllm", f"model.path={out}", "sampling=greedy",
         "sampling.max_tokens=32", "max_users=3", f"output_dir={run_dir}"],
        cwd=REPO, capture_output=True, text=True, timeout=600, env=env)
    if cpu_kernel_missing(str(out), GPUS > 0):
        # vllm-cpu's AVX2 build has no W4A16 kernel: one line, exit 2, before the engine starts.
        assert result.returncode == 2, (result.stdout + result.stderr)[-3000:]
        assert "needs vllm-cpu's AVX-512 kernels" in result.stdout + result.stderr
        return
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    summary = read_json(run_dir / SUMMARY_FILE)
    assert summary["quantization"]["bits"] == 4 and summary["quantization"]["algorithm"] == "awq"
    texts = [item["generated_samples"][0] for path in iter_user_files(run_dir)
             for item in read_json(path)["items"]]
    assert texts and not [t for t in texts if is_degenerate(t)], texts

    # Transformers (compressed-tensors decompresses the packed weights to bf16 on load).
    from inference_hf.engine import HFEngine

    engine = HFEngine(str(out), {"dtype": "bfloat16"}, seed=42)
    try:
        greedy = SamplingSettings(num_samples=1, temperature=0.0, top_p=1.0, top_k=-1,
                                  max_tokens=32, seed=42)
        requests = []
        questions = ["What is the capital of France?", "Describe the sea in one sentence."]
        for i, q in enumerate(questions):
            text = tokenizer.apply_chat_template([{"role": "user", "content": q}], tokenize=False,
                                                 add_generation_prompt=True)
            ids = tokenizer(text, add_special_tokens=False)["input_ids"]
            requests.append(GenerationRequest(str(i), tuple(ids), 1))
        hf_texts = [c.texts[0] for c in engine.generate(requests, greedy)]
    finally:
        engine.close()
    assert len(hf_texts) == 2, hf_texts
    assert all(t.strip() and not is_degenerate(t) for t in hf_texts), hf_texts


@pytest.mark.engine
@NO_QUANT_VENV
def test_benchmark_sets_a_model_beside_its_quantized_copy(quantized, tmp_path: Path, capsys):
    from inference_vllm.bench.quant import main

    assert main(["--quantized", str(quantized[0]), "--engine", "hf", "--max-users", "1",
                 "--max-tokens", "8", "--out", str(tmp_path), "model.max_model_len=1024"]) == 0
    table = capsys.readouterr().out
    assert "original" in table and "awq w4 g64" in table and "chrF(quantized vs original)" in table
    report = read_json(tmp_path / "bench_quant.json")
    assert [r["quantization"] is None for r in report["rows"]] == [True, False]
    assert report["agreement"]["items"] > 0


def test_only_weight_only_checkpoints_on_a_cpu_without_avx512_are_refused(
        tmp_path: Path, model_path: Path, monkeypatch) -> None:
    import torch

    quantized = tmp_path / "w4a16"
    quantized.mkdir()
    (quantized / "config.json").write_bytes(orjson.dumps({"quantization_config": {
        "quant_method": "awq", "bits": 4, "group_size": 64, "zero_point": True}}))
    monkeypatch.setattr(torch.cpu, "_is_avx512_supported", lambda: False)
    assert "AVX2 only" in cpu_kernel_missing(str(quantized), on_gpu=False)
    assert cpu_kernel_missing(str(quantized), on_gpu=True) is None
    assert cpu_kernel_missing(str(model_path), on_gpu=False) is None  # unquantized
    monkeypatch.setattr(torch.cpu, "_is_avx512_supported", lambda: True)
    assert cpu_kernel_missing(str(quantized), on_gpu=False) is None
