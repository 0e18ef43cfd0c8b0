#!/bin/sh
# CMake flags for llama.cpp's CPU backend on this host, printed on one line.
#
# llama.cpp builds with GGML_NATIVE (-march=native) by default, which turns on every
# feature the CPU reports, AMX included. In virtual machines on Sapphire/Granite Rapids
# hosts the CPU reports AMX but its tile instructions fault: every decode dies with a
# general protection fault in ggml_backend_amx_mul_mat (llama.cpp issue #20824; seen here
# on 2026-12-02). Where the CPU reports AMX, this prints the host's other features one by
# one instead of -march=native, leaving AMX out; elsewhere it prints nothing (native).
# AMX=1 in the environment keeps the native build (bare metal, where AMX works).
flags=$(grep -m1 '^flags' /proc/cpuinfo 2>/dev/null)
case " $flags " in
  *" amx_int8 "*) ;;
  *) exit 0 ;;
esac
[ "${AMX:-0}" = 1 ] && exit 0
out="-DGGML_NATIVE=OFF"
has() { case " $flags " in *" $1 "*) return 0 ;; esac; return 1; }
for pair in sse4_2:SSE42 avx:AVX avx2:AVX2 fma:FMA f16c:F16C bmi2:BMI2 avx_vnni:AVX_VNNI avx512f:AVX512 \
  avx512vbmi:AVX512_VBMI avx512_vnni:AVX512_VNNI avx512_bf16:AVX512_BF16; do
  has "${pair%%:*}" && out="$out -DGGML_${pair#*:}=ON"
done
echo "$out"
