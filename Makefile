# Everything installs into .venv/ inside the repo; targets are safe to re-run.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

.PHONY: setup models run test lint bench clean

# llama-cpp-python compiles llama.cpp (~5-8 min on 2 cores) the first time;
# pip caches the wheel, so later set-ups take seconds.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	CMAKE_BUILD_PARALLEL_LEVEL=$$(nproc) $(PY) -m pip install -e '.[test]'
	touch $(STAMP)

setup: $(STAMP)

models: setup
	$(PY) -m server pull

run: models
	$(PY) -m server serve

lint: setup
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy

test: models lint
	$(PY) -m pytest

bench: models
	$(PY) -m bench.throughput

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
