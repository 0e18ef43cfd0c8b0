"""Quantize a GGUF with llama.cpp's own quantizer (``llama_model_quantize``).

How the Q2/Q4/Q8 variants (and a cheap draft model) are made. The source may
itself be quantized: ``allow_requantize`` lets llama.cpp dequantize and
quantize again, at some extra loss, which is the only way here since the
shipped models are already 4-bit.
"""

from __future__ import annotations

import ctypes
import os
from pathlib import Path

import llama_cpp as C
import llama_cpp._logger

QUANT_TYPES = {
    "q2_k": C.LLAMA_FTYPE_MOSTLY_Q2_K,
    "q4_0": C.LLAMA_FTYPE_MOSTLY_Q4_0,
    "q4_1": C.LLAMA_FTYPE_MOSTLY_Q4_1,
    "q4_k_m": C.LLAMA_FTYPE_MOSTLY_Q4_K_M,
    "q5_k_m": C.LLAMA_FTYPE_MOSTLY_Q5_K_M,
    "q6_k": C.LLAMA_FTYPE_MOSTLY_Q6_K,
    "q8_0": C.LLAMA_FTYPE_MOSTLY_Q8_0,
    "f16": C.LLAMA_FTYPE_MOSTLY_F16,
}


def quantize(source: str | Path, target: str | Path, quant_type: str) -> None:
    """Write ``target`` as ``quant_type`` of ``source``; atomic, like ``pull``."""
    source, target = Path(source), Path(target)
    if quant_type not in QUANT_TYPES:
        raise ValueError(f"unknown type {quant_type!r}; choose one of {', '.join(QUANT_TYPES)}")
    if not source.is_file():
        raise ValueError(f"source model {source} does not exist")
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f"{target.name}.{os.getpid()}.partial")  # one per process
    llama_cpp._logger.set_verbose(False)  # a line per tensor otherwise
    params = C.llama_model_quantize_default_params()
    params.ftype = QUANT_TYPES[quant_type]
    params.allow_requantize = True
    params.nthread = os.cpu_count() or 1
    try:
        rc = C.llama_model_quantize(
            str(source).encode(), str(partial).encode(), ctypes.byref(params)
        )
        if rc != 0:
            raise RuntimeError(f"llama.cpp could not quantize {source} to {quant_type} (code {rc})")
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)
