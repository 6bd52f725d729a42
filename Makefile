# Two entry points a fresh machine needs: `make run` (the whole pipeline on the embedded default) and
# `make test`. Both create .venv, install torch first (so a CPU or CUDA wheel already chosen is kept),
# then the project.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
TORCH_SPEC ?= torch==2.13.0
PYTEST_ARGS ?= -m "not slow"

.PHONY: setup run test test-slow lint server bench clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(VENV)/.installed: $(BIN)/python pyproject.toml
	$(BIN)/pip install -q "$(TORCH_SPEC)" || $(BIN)/pip install -q "torch>=2.6,<3"
	$(BIN)/pip install -q -e ".[dev]"
	touch $@

setup: $(VENV)/.installed

run: setup
	$(BIN)/crawl2score run --config tiny

test: setup
	$(BIN)/lint-imports
	$(BIN)/pytest $(PYTEST_ARGS)

test-slow: setup
	$(BIN)/pytest -m slow

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

server: setup
	$(BIN)/crawl2score server

bench: setup
	$(BIN)/python benchmarks/dedup.py
	$(BIN)/python benchmarks/tokenizer.py
	$(BIN)/python benchmarks/moe_layer.py
	$(BIN)/python benchmarks/train_throughput.py
	$(BIN)/python benchmarks/generation.py

clean:
	rm -rf work .prefect
