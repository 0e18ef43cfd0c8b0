"""What llama.cpp can run on: compiled-in backends, devices, and where a model's layers went.

The binding does not wrap ggml's device registry, so the few functions used here are
declared on the library it loaded (``dlsym`` on libllama also finds libggml's symbols).
Where a model's layers and buffers went is read from llama.cpp's own load log, captured
per loading thread: it is the one place llama.cpp says it, whatever the build.
"""

from __future__ import annotations

import ctypes
import re
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import llama_cpp as C
import llama_cpp._logger

_lib: Any = C.llama_cpp._lib
_lib.ggml_backend_reg_count.restype = ctypes.c_size_t
_lib.ggml_backend_reg_get.argtypes = [ctypes.c_size_t]
_lib.ggml_backend_reg_get.restype = ctypes.c_void_p
_lib.ggml_backend_reg_name.argtypes = [ctypes.c_void_p]
_lib.ggml_backend_reg_name.restype = ctypes.c_char_p
_lib.ggml_backend_dev_count.restype = ctypes.c_size_t
_lib.ggml_backend_dev_get.argtypes = [ctypes.c_size_t]
_lib.ggml_backend_dev_get.restype = ctypes.c_void_p
for _fn in ("ggml_backend_dev_name", "ggml_backend_dev_description"):
    getattr(_lib, _fn).argtypes = [ctypes.c_void_p]
    getattr(_lib, _fn).restype = ctypes.c_char_p
_lib.ggml_backend_dev_type.argtypes = [ctypes.c_void_p]
_lib.ggml_backend_dev_type.restype = ctypes.c_int
_lib.ggml_backend_dev_memory.argtypes = [
    ctypes.c_void_p,
    ctypes.POINTER(ctypes.c_size_t),
    ctypes.POINTER(ctypes.c_size_t),
]

# enum ggml_backend_dev_type
DEVICE_TYPES = {0: "cpu", 1: "gpu", 2: "igpu", 3: "accel"}


@dataclass(frozen=True, slots=True)
class Device:
    name: str
    description: str
    type: str
    memory_total: int
    memory_free: int

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": self.description,
            "type": self.type,
            "memory_total_bytes": self.memory_total,
            "memory_free_bytes": self.memory_free,
        }


def supports_gpu_offload() -> bool:
    return bool(C.llama_supports_gpu_offload())


def backends() -> list[str]:
    """Backends compiled in (and loaded): "CPU", "CUDA", "Vulkan", "Metal", ..."""
    return [
        _lib.ggml_backend_reg_name(_lib.ggml_backend_reg_get(i)).decode()
        for i in range(_lib.ggml_backend_reg_count())
    ]


def devices() -> list[Device]:
    found = []
    for i in range(_lib.ggml_backend_dev_count()):
        dev = _lib.ggml_backend_dev_get(i)
        free, total = ctypes.c_size_t(0), ctypes.c_size_t(0)
        _lib.ggml_backend_dev_memory(dev, ctypes.byref(free), ctypes.byref(total))
        found.append(
            Device(
                name=_lib.ggml_backend_dev_name(dev).decode(),
                description=_lib.ggml_backend_dev_description(dev).decode(errors="replace"),
                type=DEVICE_TYPES.get(_lib.ggml_backend_dev_type(dev), "unknown"),
                memory_total=int(total.value),
                memory_free=int(free.value),
            )
        )
    return found


def gpu_devices() -> list[Device]:
    return [d for d in devices() if d.type in ("gpu", "igpu")]


@dataclass(frozen=True, slots=True)
class Placement:
    """How a model is spread over devices, as asked of llama.cpp."""

    gpu_layers: int = 0  # -1: all layers and the output layer
    main_gpu: int = 0
    tensor_split: tuple[float, ...] = ()
    offload_kv: bool = True


@dataclass(slots=True)
class LoadReport:
    """Where llama.cpp put a model's layers and buffers, from its own log lines."""

    layers: Counter[str] = field(default_factory=Counter)  # device -> repeating layers
    output_device: str | None = None
    buffers: Counter[str] = field(default_factory=Counter)  # "CUDA0 KV" -> bytes

    def as_dict(self) -> dict[str, Any]:
        return {
            "layers": dict(self.layers),
            "output_layer": self.output_device,
            "buffers_bytes": dict(self.buffers),
        }

    def device_bytes(self) -> int:
        """Bytes in buffers that live on an accelerator rather than in host memory."""
        return sum(n for name, n in self.buffers.items() if not is_host_buffer(name.split()[0]))

    @property
    def attends_on_host(self) -> bool:
        """The KV cache, and so attention, is in host memory (true when none was reported)."""
        kv = [name for name in self.buffers if name.endswith(" KV")]
        return all(is_host_buffer(name.split()[0]) for name in kv)


def is_host_buffer(name: str) -> bool:
    # llama.cpp's host buffer types: CPU, CPU_Mapped, CPU_REPACK, CUDA_Host, ...
    return name.startswith("CPU") or name.endswith("_Host")


_LAYER = re.compile(r"layer\s+(\d+) assigned to device (\S+?),")
_BUFFER = re.compile(r"^\S+:\s+(\S+)\s+(model|KV|compute|RS|output) buffer size =\s+([\d.]+) MiB")

_capture = threading.local()


_listeners: list[Callable[[str], None]] = []  # more readers of llama.cpp's log lines


def _log(level: int, text: bytes, user_data: ctypes.c_void_p) -> None:
    line = text.decode(errors="replace")
    lines: list[str] | None = getattr(_capture, "lines", None)
    if lines is not None:
        lines.append(line)
    for listener in _listeners:
        listener(line)
    llama_cpp._logger.llama_log_callback(level, text, user_data)


_on_log = C.llama_log_callback(_log)  # kept referenced: llama.cpp holds the pointer


def install_log_capture(listener: Callable[[str], None] | None = None) -> None:
    """Route llama.cpp's log through here (it still reaches llama-cpp-python's logger);
    ``listener``, if given, is called with every line, on the thread that logs it."""
    with _listeners_lock:
        if listener is not None and listener not in _listeners:
            _listeners.append(listener)
        C.llama_log_set(_on_log, ctypes.c_void_p(0))


_listeners_lock = threading.Lock()


@contextmanager
def capture_load(report: LoadReport) -> Iterator[LoadReport]:
    """Collect the layer placement and buffer sizes llama.cpp logs on this thread."""
    lines: list[str] = []
    _capture.lines = lines
    try:
        yield report
    finally:
        _capture.lines = None
        parse_log(lines, report)


def parse_log(lines: list[str], report: LoadReport) -> None:
    layers: dict[int, str] = {}
    for line in "".join(lines).splitlines():
        if m := _LAYER.search(line):
            layers[int(m.group(1))] = m.group(2)
        elif m := _BUFFER.search(line):
            report.buffers[f"{m.group(1)} {m.group(2)}"] += int(float(m.group(3)) * (1 << 20))
    if layers:
        # llama.cpp numbers the output layer n_layer, after the repeating ones
        last = max(layers)
        report.output_device = layers.pop(last)
        report.layers.update(Counter(layers.values()))
