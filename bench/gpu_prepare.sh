#!/usr/bin/env bash
# Stage what bench/gpu_device.sh needs on a GPU machine with no network into .gpu/
# (git-ignored): .gpu/a (pruned llama-cpp-python sdist, missing wheels, model part a) and
# .gpu/b (model part b, test wheels). Each part stays under a device call's 64 MiB.
set -euo pipefail
model=${1:-models/SmolLM2-135M-Instruct.Q4_1.gguf}
pip=${PIP:-.venv/bin/pip}
version=$(sed -n 's/.*"llama-cpp-python==\([0-9.]*\)".*/\1/p' pyproject.toml)
rm -rf .gpu && mkdir -p .gpu/a/whl .gpu/b/whl .gpu/sdist
grep -qx '/.gpu/' .git/info/exclude 2>/dev/null || echo /.gpu/ >> .git/info/exclude
$pip download -q --no-binary :all: --no-deps "llama-cpp-python==$version" -d .gpu/sdist
tar xzf .gpu/sdist/llama_cpp_python-"$version".tar.gz -C .gpu/sdist
src=.gpu/sdist/llama_cpp_python-$version
# what libllama needs: no models, docs, tools or tests (75 MB of sample vocabularies alone)
tar czf .gpu/a/llama-src.tar.gz -C "$src" llama_cpp vendor/llama.cpp/{CMakeLists.txt,cmake,ggml,src,include,common,vendor,LICENSE}
rm -rf .gpu/sdist
wheels() {  # the device's Python is 3.12 and has numpy, jinja2, anyio, httpx, pytest
    $pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
        --platform manylinux2014_x86_64 -d "$@"
}
wheels .gpu/a/whl starlette uvicorn orjson diskcache
wheels .gpu/b/whl pytest-asyncio
split -b 52000000 -a 1 "$model" .gpu/model.part-
mv .gpu/model.part-a .gpu/a/ && mv .gpu/model.part-b .gpu/b/
du -sh .gpu/a .gpu/b
