# diga — common tasks. `make help` lists them.
SHELL := /bin/bash
PYTHON ?= python3
ARCH := $(shell uname -m)
# torch/torchvision pair that imports together on this kind of machine (see README "Install"), and the lock of
# every other package at the exact versions the README's numbers were measured with (CPython 3.11).
LOCK_ARCH := $(if $(filter aarch64 arm64,$(ARCH)),aarch64,x86_64)
TORCH_PAIR := $(shell cat requirements/torch-$(LOCK_ARCH).txt)
LOCK := requirements/lock-$(LOCK_ARCH).txt
export NO_ALBUMENTATIONS_UPDATE := 1
export HF_HUB_OFFLINE := 1
export WANDB_SILENT := true
PYTEST_ARGS ?=
# pytest-xdist workers (0: one process). One pytest process keeps a second core mostly idle (imports, subprocesses,
# Lightning's per-step Python), so two workers nearly halve the default suite on 2 cores; each takes half of the
# suite's two threads (tests/conftest.py). `worksteal`: a worker that runs out of tests takes half of the other's
# queue. The slow suite hands out one test at a time, longest first (`slow(seconds=…)`).
TEST_WORKERS ?= 2
XDIST := -n $(TEST_WORKERS) --dist worksteal
XDIST_SLOW := -n $(TEST_WORKERS) --dist load --maxschedchunk 1
DEMO_STAGE ?= pipeline

.PHONY: help install install-floating lock test test-slow test-all test-gpu gpu-smoke test-reference lint format demo train bench rehearsal reproduce docs ablation clean clean-logs

help: ## list targets
	@grep -E '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN{FS=":.*?## "}{printf "  %-12s %s\n", $$1, $$2}'

install: ## the locked environment (exact versions of every package), then diga (editable)
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' || { echo "make install: \
	$(LOCK) is for CPython 3.11, this is $$($(PYTHON) -V); use 'make install-floating' (newest versions within \
	pyproject.toml's ranges) or a Python 3.11 environment" >&2; exit 1; }
	$(PYTHON) -m pip install -q $(TORCH_PAIR)
	$(PYTHON) -m pip install -q -r $(LOCK)
	$(PYTHON) -m pip install -q --no-deps -e .

install-floating: ## the torch pair, then diga with the newest dependencies pyproject.toml allows (not the lock)
	$(PYTHON) -m pip install -q $(TORCH_PAIR)
	$(PYTHON) -m pip install -q -e ".[dev]"

LOCK_CONSTRAINTS ?=
lock: ## re-resolve requirements/lock-*.txt with uv (LOCK_CONSTRAINTS=<pip freeze file> keeps those versions)
	@for arch in x86_64 aarch64; do \
	  cons=$$(mktemp); if [ -n "$(LOCK_CONSTRAINTS)" ]; then \
	    grep -viE '^(torch|torchvision|nvidia-|triton|cuda-)' "$(LOCK_CONSTRAINTS)" > $$cons; fi; \
	  uv pip compile pyproject.toml --extra dev --python-version 3.11 --python-platform $$arch-manylinux_2_28 \
	    -c requirements/torch-$$arch.txt -c $$cons --no-annotate --custom-compile-command "make lock" \
	    -o requirements/lock-$$arch.txt -q || exit 1; rm -f $$cons; echo "wrote requirements/lock-$$arch.txt"; done

test: ## default test suite: everything but the slow and GPU tests (4 to 9 minutes on 2 cores, by CPU)
	$(PYTHON) -m pytest -q $(XDIST) -m "not slow and not gpu and not reference" --durations=15 $(PYTEST_ARGS)

test-slow: ## the slow tests: whole pipelines, DDP, the reduced-size rehearsal of every experiment, sweeps
	$(PYTHON) -m pytest -q $(XDIST_SLOW) -m "slow and not gpu" --durations=40 $(PYTEST_ARGS)

test-all: ## both (what CI runs)
	$(PYTHON) -m pytest -q $(XDIST_SLOW) -m "not gpu and not reference" $(PYTEST_ARGS)

test-gpu: ## GPU tests (on a machine with CUDA)
	$(PYTHON) -m pytest -q -m gpu $(PYTEST_ARGS)

gpu-smoke: ## on a GPU machine: every toy stage on CUDA in fp32/bf16/fp16 (+ DDP with 2+ GPUs) → logs/gpu_smoke/*.{json,md}
	$(PYTHON) -m benchmarks.gpu_smoke $(GPU_SMOKE_ARGS)

test-reference: ## numerical comparisons with the authors' code (DIGA_REFERENCE_DIR=<folder with DiGA/ DAFormer/ MIC/ HRDA/>)
	$(PYTHON) -m pytest -q -m reference tests/reference $(PYTEST_ARGS)

lint: ## ruff lint + format check
	$(PYTHON) -m ruff check src tests benchmarks tools
	$(PYTHON) -m ruff format --check src tests benchmarks tools

format: ## auto-fix lint and format
	$(PYTHON) -m ruff check --fix src tests benchmarks tools
	$(PYTHON) -m ruff format src tests benchmarks tools

demo: ## the main job on the embedded toy domain pair (no download); ends with its wall time
	@start=$$(date +%s); $(PYTHON) -m diga.train experiment=toy stage=$(DEMO_STAGE); rc=$$?; \
	s=$$(( $$(date +%s) - start )); echo "make demo: $$(( s / 60 )) min $$(( s % 60 )) s wall time ($$(nproc) CPU cores$$(\
	$(PYTHON) -c 'import torch; print(", CUDA" if torch.cuda.is_available() else "")' 2>/dev/null)), exit status $$rc"; \
	exit $$rc

train: ## python -m diga.train experiment=$(EXP) stage=$(STAGE)
	$(PYTHON) -m diga.train experiment=$(EXP) stage=$(STAGE)

bench: ## performance benchmarks (see benchmarks/README.md)
	$(PYTHON) -m benchmarks.run

EXP ?= toy
SEEDS ?= 0,1,2
ABLATION ?= glob(*)
ablation: ## every row of conf/ablation/ × SEEDS as one Hydra multirun (shared steps computed once), then the table
	$(PYTHON) -m diga.train -m experiment=$(EXP) stage=pipeline "ablation=$(ABLATION)" seed=$(SEEDS) run_id=ablation \
		stage.step_cache=logs/ablation_cache/$(EXP) trainer.enable_progress_bar=false
	$(PYTHON) -m diga.ablation logs/train/$(EXP)/multirun/ablation

reproduce: ## the toy pipeline at reduced size against benchmarks/expected/toy_reduced.json (exact on the same kernels)
	$(PYTHON) -m benchmarks.reproduce $(REPRODUCE_ARGS)

docs: ## regenerate docs/configuration.md from conf/ (the comment beside each key is its meaning)
	$(PYTHON) -m tools.config_reference docs/configuration.md

rehearsal: ## every real experiment and baseline on fake data at the real image sizes (CPU, small encoder; hours)
	$(PYTHON) -m benchmarks.rehearsal $(REHEARSAL_ARGS)

clean-logs: ## remove run directories
	rm -rf logs/ outputs/ multirun/ wandb/

clean: clean-logs ## remove caches and run directories
	rm -rf .pytest_cache .ruff_cache build dist src/*.egg-info
