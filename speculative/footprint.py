"""How much memory a model and its contexts take: measured, and estimated beforehand.

Measured: llama.cpp reports every buffer it allocates in its log ("CPU_Mapped
model buffer size = 92.10 MiB", "CPU KV buffer size = 720.00 MiB", "CPU compute
buffer size = 102.51 MiB"), and the C API has no getter for the KV or compute
buffers (``llama_get_memory_breakdown`` is C++ only; ``llama_state_get_size``
counts only used cells, ~0 for a fresh context). So a load runs inside
``measure()``, which collects those lines logged by its own thread.

Estimated, before anything is allocated, from the GGUF header (a vocab-only
load): weights = file size; KV = layers x cells x KV heads x (key + value head
size) x bytes per element (f16: 2; q8_0: 34 bytes per 32); compute = the
logits of one ubatch (vocab x batch tokens x 4) plus the output buffer (vocab x
sequences x 4). For SmolLM2-135M at 16 x 2048 this gives 720 MiB of KV, as
llama.cpp allocates; Gemma 3's sliding-window layers get the same cells here.
"""

from __future__ import annotations

import ctypes
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import llama_cpp as C
import llama_cpp._logger

from speculative import devices
from speculative.llama import ModelLoadError, init_backend

MIB = 1 << 20
# bytes per element of the KV cache types this server offers
KV_TYPE_BYTES = {"f16": 2.0, "q8_0": 34 / 32}
_BUFFER = re.compile(r"(\S+)\s+(model|KV|compute|output) buffer size =\s*([0-9.]+) MiB")
_local = threading.local()


@dataclass(slots=True)
class Footprint:
    """Bytes a loaded model holds (or will hold): its own and its draft's."""

    weights_bytes: int = 0
    kv_bytes: int = 0
    compute_bytes: int = 0  # compute and output buffers
    draft_bytes: int = 0  # the draft model's weights and context, all kinds together
    device_bytes: int = 0  # in accelerator memory (GPU offload): not part of the host total
    # the weights above, by model file: a file open for two models is held once
    files: dict[str, int] = field(default_factory=dict)

    @property
    def total_bytes(self) -> int:
        return self.weights_bytes + self.kv_bytes + self.compute_bytes + self.draft_bytes

    def as_dict(self) -> dict[str, int]:
        return {
            "weights_bytes": self.weights_bytes,
            "kv_bytes": self.kv_bytes,
            "compute_bytes": self.compute_bytes,
            "draft_bytes": self.draft_bytes,
            "total_bytes": self.total_bytes,
            "device_bytes": self.device_bytes,
        }


@dataclass(slots=True)
class Measured:
    """Buffers llama.cpp reported while ``measure()`` was open on this thread."""

    by_kind: dict[str, int] = field(default_factory=dict)

    def add(self, kind: str, num_bytes: int) -> None:
        self.by_kind[kind] = self.by_kind.get(kind, 0) + num_bytes

    @property
    def total_bytes(self) -> int:
        """Host memory: what an accelerator holds is counted apart."""
        return sum(n for kind, n in self.by_kind.items() if kind != "device")

    def footprint(self) -> Footprint:
        kinds = self.by_kind
        return Footprint(
            weights_bytes=kinds.get("model", 0),
            kv_bytes=kinds.get("KV", 0),
            compute_bytes=kinds.get("compute", 0) + kinds.get("output", 0),
            device_bytes=kinds.get("device", 0),
        )


@contextmanager
def measure() -> Iterator[Measured]:
    """Collect the sizes of buffers llama.cpp allocates on this thread meanwhile."""
    _install_log_hook()
    measured = Measured()
    outer = getattr(_local, "measured", None)
    _local.measured = measured
    try:
        yield measured
    finally:
        _local.measured = outer
        if outer is not None:
            for kind, num_bytes in measured.by_kind.items():
                outer.add(kind, num_bytes)


def _on_line(line: str) -> None:
    measured: Measured | None = getattr(_local, "measured", None)
    if measured is not None and (match := _BUFFER.search(line)):
        # an accelerator's buffers are not host memory: the budget counts them apart
        kind = match[2] if devices.is_host_buffer(match[1]) else "device"
        measured.add(kind, round(float(match[3]) * MIB))


def _install_log_hook() -> None:
    devices.install_log_capture(_on_line)


@dataclass(slots=True, frozen=True)
class Shape:
    """What the footprint of a model depends on, read from its GGUF header."""

    file_bytes: int
    num_layers: int
    num_kv_heads: int
    key_size: int  # per head
    value_size: int
    num_vocab: int

    def context_bytes(
        self, *, num_cells: int, num_seqs: int, batch_tokens: int, cache_type: str = "f16"
    ) -> tuple[int, int]:
        """(KV bytes, compute + output bytes) of a context with these settings."""
        per_cell = self.num_layers * self.num_kv_heads * (self.key_size + self.value_size)
        kv = round(per_cell * num_cells * KV_TYPE_BYTES[cache_type])
        compute = 4 * self.num_vocab * (batch_tokens + num_seqs)
        return kv, compute


def read_shape(path: str | Path) -> Shape:
    """The model's dimensions, from a vocab-only load (no weights are read)."""
    path = Path(path)
    if not path.is_file():
        raise ModelLoadError(f"model file {path} does not exist")
    init_backend()
    params = C.llama_model_default_params()
    params.vocab_only = True
    ptr = C.llama_model_load_from_file(str(path).encode(), params)
    if not ptr:
        raise ModelLoadError(f"llama.cpp could not load {path}: not a valid GGUF model")
    try:
        # only the header's keys: a vocab-only load leaves llama.cpp's hparams unset
        arch = _meta(ptr, "general.architecture") or ""

        def number(key: str, default: int) -> int:
            text = _meta(ptr, f"{arch}.{key}")
            return int(text) if text and text.isdigit() else default

        num_heads = max(1, number("attention.head_count", 1))
        default_head = number("embedding_length", 0) // num_heads
        return Shape(
            file_bytes=path.stat().st_size,
            num_layers=number("block_count", 0),
            num_kv_heads=number("attention.head_count_kv", num_heads),
            key_size=number("attention.key_length", default_head),
            value_size=number("attention.value_length", default_head),
            num_vocab=int(C.llama_vocab_n_tokens(C.llama_model_get_vocab(ptr))),
        )
    finally:
        C.llama_model_free(ptr)


def _meta(ptr: ctypes.c_void_p, key: str) -> str | None:
    buf = ctypes.create_string_buffer(256)
    n = C.llama_model_meta_val_str(ptr, key.encode(), buf, 256)
    return buf.value.decode() if n >= 0 else None
