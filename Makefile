# Everything installs into .venv/ inside the repo; targets are safe to re-run.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
SUDO := $(shell [ "$$(id -u)" -eq 0 ] || echo sudo)

.PHONY: setup models browser cluster-deps cluster run run-app test run-tests lint bench quantize clean \
	container-build container-run llama-server start-inference-service stop-inference-service test-inference-service
CONTAINER ?= $(shell command -v podman >/dev/null 2>&1 && echo podman || echo docker)

# llama-cpp-python compiles llama.cpp (~5-8 min on 2 cores) the first time;
# pip caches the wheel, so later set-ups take seconds.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	CMAKE_BUILD_PARALLEL_LEVEL=$$(nproc) $(PY) -m pip install -e '.[test]'
	touch $(STAMP)

# make setup GPU=cuda|vulkan|metal: the same .venv with llama.cpp built for that GPU
# backend (plain `make setup` is the CPU build). pip's wheel cache does not know about
# CMAKE_ARGS, so a GPU build is compiled afresh and kept out of the cache.
GPU ?= cpu
GPU_CMAKE_cuda := -DGGML_CUDA=on
GPU_CMAKE_vulkan := -DGGML_VULKAN=on
GPU_CMAKE_metal := -DGGML_METAL=on
GPU_STAMP := $(VENV)/.llama-$(GPU)
LLAMA_CPP := $(shell sed -n 's/.*"\(llama-cpp-python==[0-9.]*\)".*/\1/p' pyproject.toml)

$(GPU_STAMP): $(STAMP)
	@case "$(GPU)" in cpu|cuda|vulkan|metal) ;; \
	  *) echo "error: GPU=$(GPU): use cuda, vulkan or metal (or leave it out for the CPU)"; exit 2;; esac
	@if [ "$(GPU)" != cpu ]; then \
	  CMAKE_ARGS="$(GPU_CMAKE_$(GPU)) $(CMAKE_ARGS)" CMAKE_BUILD_PARALLEL_LEVEL=$$(nproc) \
	    $(PY) -m pip install --force-reinstall --no-deps --no-cache-dir \
	    --no-binary llama-cpp-python '$(LLAMA_CPP)'; \
	elif ls $(VENV)/.llama-cuda $(VENV)/.llama-vulkan $(VENV)/.llama-metal 2>/dev/null | grep -q .; then \
	  $(PY) -m pip install --force-reinstall --no-deps '$(LLAMA_CPP)'; \
	fi
	rm -f $(VENV)/.llama-*
	touch $@

setup: $(STAMP) $(GPU_STAMP)

models: setup
	$(PY) -m server pull

run run-app: models
	$(PY) -m server serve

# The UI tests drive Debian's Chromium through Playwright (never a downloaded browser).
browser:
	@test -x /usr/bin/chromium || { $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq chromium; }

# The cluster (make cluster, its test) runs Debian's redis-server and nginx.
cluster-deps:
	@test -x /usr/bin/redis-server -a -x /usr/sbin/nginx || { $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq redis-server nginx; }

# Redis + two replicas + nginx on loopback under a temporary folder; Ctrl-C stops them.
cluster: models cluster-deps
	$(PY) -m server.cluster

lint: setup
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy

test run-tests: models browser cluster-deps lint
	$(PY) -m pytest

# llama.cpp's own server, the benchmark's baseline (c): built from the llama.cpp inside
# the pinned llama-cpp-python sdist (the engine this server runs), outside the package.
LLAMA_SERVER := build/llama-server/llama-server
llama-server: $(LLAMA_SERVER)
$(LLAMA_SERVER): pyproject.toml | setup
	rm -rf build/llama-server && mkdir -p build/llama-server
	$(PY) -m pip download -q --no-binary :all: --no-deps '$(LLAMA_CPP)' -d build/llama-server
	tar xzf build/llama-server/llama_cpp_python-*.tar.gz -C build/llama-server
	cmake -S build/llama-server/llama_cpp_python-*/vendor/llama.cpp -B build/llama-server/cmake \
	  -DCMAKE_BUILD_TYPE=Release -DBUILD_SHARED_LIBS=OFF -DLLAMA_CURL=OFF \
	  -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF
	cmake --build build/llama-server/cmake -j $$(nproc) --target llama-server
	cp build/llama-server/cmake/bin/llama-server $@

bench: models
	$(PY) -m bench.run
	$(PY) -m bench.vs_llama
	$(PY) -m bench.chat

container-build:
	$(CONTAINER) build -t edge-llm-server -f Containerfile .

container-run:
	$(CONTAINER) run --rm -p 8000:8000 edge-llm-server

# Replicas + nginx + Redis in containers (deploy/compose.yaml), nginx on port 8080.
COMPOSE := $(CONTAINER) compose -f deploy/compose.yaml
SERVICE_URL ?= http://127.0.0.1:8080

start-inference-service:
	$(COMPOSE) up -d --build

stop-inference-service:
	$(COMPOSE) down

test-inference-service:
	$(PYTHON) examples/simple_tester.py --url $(SERVICE_URL) health-check
	$(PYTHON) examples/simple_tester.py --url $(SERVICE_URL) generate --prompt "Hi" --stream
	$(PYTHON) examples/simple_tester.py --url $(SERVICE_URL) get-task-status --wait --task-id \
	  $$($(PYTHON) examples/simple_tester.py --url $(SERVICE_URL) send-text --prompt "Hi")

# The prototype's `convert`: make quantize SRC=models/x.gguf TYPE=q8_0 OUT=models/x.q8_0.gguf
quantize: setup
	$(PY) -m server quantize $(SRC) --type $(TYPE) -o $(OUT)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
