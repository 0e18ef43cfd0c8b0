#!/usr/bin/env bash
# GPU offload on a lent NVIDIA machine (no network there): build llama.cpp with CUDA from
# the pinned sdist, then run tests/models/test_gpu.py and bench.gpu (GPU vs CPU, same machine).
#
# Prepared here by `bench/gpu_prepare.sh` into .gpu/ (git-ignored): the pruned sdist,
# the wheels the machine lacks, and the model in two parts (a call carries at most
# 64 MiB). Run in two device calls back to back (the machine stays warm ~30 s):
#   1. carry .gpu/a:  bash bench/gpu_device.sh build    (unpack, cmake, build libllama)
#   2. carry .gpu/b:  bash bench/gpu_device.sh bench    (join the model, test, bench)
# Outputs land in $OUT (gpu.md, gpu.json, logs).
set -euo pipefail
stage=${1:?build or bench}
work=/tmp/edge-llm-gpu
out=${OUT:-$work/out}
mkdir -p "$work" "$out"

wait_build() {  # until the build's exit status is written, at most $1 seconds
    for _ in $(seq "$1"); do [ -f "$work/build.rc" ] && break; sleep 1; done
    cp "$work"/cmake.log "$work"/build.log "$out"/ 2>/dev/null || true
    [ -f "$work/build.rc" ] || { echo "build still running"; tail -3 "$work/build.log"; exit 3; }
    [ "$(cat "$work/build.rc")" = 0 ] || { echo "build failed"; tail -40 "$work/build.log" "$work/cmake.log"; exit 1; }
}

if [ "$stage" = build ]; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target "$work/site" .gpu/a/whl/*.whl
    tar xzf .gpu/a/llama-src.tar.gz -C "$work"
    cp .gpu/a/model.part-a "$work/"
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$out/gpu.txt"
    start=$(date +%s)
    # Only libllama and the ggml libraries: the server needs nothing else. Flash-attention
    # kernels are left out (GGML_CUDA_FA=OFF): they are most of the build's time. The
    # build runs in its own session so that it outlives this call if the call's time
    # runs out; the bench stage waits for it.
    setsid bash -c "
        cmake -S $work/vendor/llama.cpp -B $work/build -G Ninja -DCMAKE_BUILD_TYPE=Release \
            -DGGML_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90 -DGGML_CUDA_FA=OFF -DGGML_CUDA_NCCL=OFF \
            -DBUILD_SHARED_LIBS=ON -DLLAMA_BUILD_COMMON=OFF -DLLAMA_BUILD_TESTS=OFF \
            -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TOOLS=OFF -DLLAMA_BUILD_SERVER=OFF \
            -DLLAMA_BUILD_APP=OFF -DLLAMA_CURL=OFF > $work/cmake.log 2>&1 &&
        cmake --build $work/build -j $(nproc) --target llama > $work/build.log 2>&1
        echo \$? > $work/build.rc" < /dev/null > /dev/null 2>&1 &
    wait_build "${BUILD_WAIT_S:-500}"
    echo "built in $(($(date +%s) - start)) s: $(ls "$work/build/bin")"
    exit 0
fi

wait_build "${BUILD_WAIT_S:-300}"
cat "$work/model.part-a" .gpu/b/model.part-b > "$work/model.gguf"
sha256sum "$work/model.gguf"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target "$work/site" .gpu/b/whl/*.whl 2>/dev/null || true
export PYTHONPATH="$work/site:$work:$PWD" PYTHONUNBUFFERED=1
export LLAMA_CPP_LIB_PATH="$work/build/bin" LD_LIBRARY_PATH="$work/build/bin"
# the sampler's C top-k (setup.py builds it at install; here the tree is used as is)
include=$(python3 -c 'import sysconfig; print(sysconfig.get_paths()["include"])')
suffix=$(python3 -c 'import sysconfig; print(sysconfig.get_config_var("EXT_SUFFIX"))')
cc -O3 -shared -fPIC -I"$include" speculative/_topk.c -o "speculative/_topk$suffix" \
    || echo "no C top-k: numpy's"
python3 -c 'from server.models.gpu import host_report; print(host_report())'
# the tests read models/ through config.json: the default model is the one carried
mkdir -p models
ln -sf "$work/model.gguf" models/SmolLM2-135M-Instruct.Q4_1.gguf
timeout 150 python3 -m pytest -q -p no:cacheprovider tests/models/test_gpu.py 2>&1 \
    | tee "$out/test_gpu.txt" | tail -5 || true
cp tests/artifacts/gpu-server.log "$out/" 2>/dev/null || true
python3 -m bench.gpu --model "$work/model.gguf" --out "$out" \
    --levels "${LEVELS:-1,16,64}" --max-tokens "${MAX_TOKENS:-128}"
# The step's breakdown with every layer on the GPU, and llama.cpp's thread count for
# such a model (issue 23: 1/2/4/all), from the server's own counters.
for t in ${STEP_THREADS:-1 2 4 $(nproc)}; do
    timeout 150 python3 -m bench.step --model "$work/model.gguf" --gpu-layers all \
        --threads "$t" --rounds 1 --label "gpu-t$t" 2>&1 | tail -20 || true
    cp "bench/results/step-gpu-t$t.md" "$out/" 2>/dev/null || true
done
