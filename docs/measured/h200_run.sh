#!/bin/bash
# The session's one GPU run: bench-hf on a Qwen3-8B shape (#28), gpu_check without vLLM (#31,
# #28.4), and the Transformers pipeline on the 400-item Chameleons-like workload of #28's table.
set -u
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
t0=$(date +%s)
note() { echo "[$(( $(date +%s) - t0 ))s] $*" | tee -a "$OUT/node.txt"; }
nvidia-smi --query-gpu=name,driver_version,memory.total,memory.used --format=csv >> "$OUT/node.txt" 2>&1
python3 -V >> "$OUT/node.txt" 2>&1
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .device/wheels/*.whl || { note "wheels failed"; exit 3; }
export PYTHONPATH=/tmp/site:$PWD
note "wheels installed"
timeout "${BENCH_S:-230}" python3 -m inference_hf.bench --shape qwen3-8b --tokenizer-path .device/tokenizer --out "$OUT/hf_steps.json" > "$OUT/bench_hf.log" 2>&1
note "bench-hf rc=$?"
timeout 60 python3 .device/save_model.py qwen3-8b /tmp/q8b >> "$OUT/node.txt" 2>&1
note "model saved rc=$?"
timeout 100 python3 -m inference_vllm.gpu_check --model-path /tmp/q8b --out "$OUT/gpu_check.json" --work-dir /tmp/gpu_check > "$OUT/gpu_check.log" 2>&1
note "gpu_check rc=$?"
timeout "${RUN_S:-150}" torchrun --nproc_per_node=1 -m inference_hf dataset=custom dataset.path="$PWD/.device/chameleons400" model=finetuned_8b model.path=/tmp/q8b model.max_model_len=4096 sampling.num_samples=5 sampling.max_tokens=64 evaluate=false report=false output_dir=/tmp/run400 > "$OUT/run400.log" 2>&1
note "pipeline rc=$?"
cp /tmp/run400/inference_summary.json "$OUT/summary400.json" 2>/dev/null
note "done"
