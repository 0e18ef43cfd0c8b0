"""``weights: "fastest"``: serve a model's weights in the type the CPU kernels run fastest.

llama.cpp's CPU backend has fast matrix kernels (and repacked layouts) for Q4_0, Q4_K,
Q2_K, Q5_K, Q6_K and Q8_0, but not for Q4_1, Q5_0 or Q5_1. A file of one of those is
served as Q8_0 made from it by llama.cpp's own quantizer: Q8_0 keeps every value of
the source to within a small fraction of the source's own quantization step (a 4- or
5-bit value re-rounded to 8 bits), at about 1.5x (Q4_1) the memory. The conversion is
made once, on first load, and kept beside the file, named by the source's SHA-256, so
a replaced source gets a fresh one. Whether it is faster is measured on the host,
until a measurement is sure (``server.models.speed``): where it is not at least 5%
faster, the file itself is served (less memory, and greedy output identical to the
file's).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import logging
import mmap
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import llama_cpp as C

from server.models.quantize import quantize
from server.models.speed import measured
from speculative.devices import Placement

log = logging.getLogger(__name__)

# llama_ftype of the file -> (its name, the type served instead)
UPGRADES = {
    C.LLAMA_FTYPE_MOSTLY_Q4_1: ("Q4_1", "q8_0"),
    C.LLAMA_FTYPE_MOSTLY_Q5_0: ("Q5_0", "q8_0"),
    C.LLAMA_FTYPE_MOSTLY_Q5_1: ("Q5_1", "q8_0"),
}


@dataclass(frozen=True, slots=True)
class Weights:
    """The file llama.cpp loads for a model, and why."""

    path: str
    setting: str
    converted_from: str | None = None  # the source's type, when a conversion is served
    served_type: str | None = None
    note: str = "as-is"
    speeds: dict[str, Any] | None = None  # both files' decode rates on this host

    def as_dict(self) -> dict[str, Any]:
        return {
            "setting": self.setting,
            "file": self.path,
            "converted_from": self.converted_from,
            "served_type": self.served_type,
            "note": self.note,
            "measured": self.speeds,
        }


def weights_for(
    path: str,
    setting: str,
    placement: Placement,
    *,
    convert: bool = True,
    threads: int | None = None,
) -> Weights:
    """The file to load for a model: its own, or its cached fastest conversion (made now
    unless ``convert`` is false: then the file itself until the conversion exists).
    With ``threads``, the conversion is served only where it measured faster on this
    host with that many threads; without, by the rule alone."""
    if setting == "as-is":
        return Weights(path, setting)
    if placement.gpu_layers != 0:
        return Weights(path, setting, note="as-is: layers run on a GPU, which has its own kernels")
    ftype = file_type(path)
    if ftype not in UPGRADES:
        return Weights(path, setting, note="as-is: the CPU kernels for this type are fast")
    source_type, target = UPGRADES[ftype]
    source = Path(path)
    digest = sha256(source)
    cached = source.with_name(f"{source.stem}.{target}-{digest[:16]}.gguf")
    if not cached.is_file() and not convert:
        return Weights(path, setting, note="as-is until converted on first load")
    if not cached.is_file():
        log.info(
            "converting %s (%s) to %s once, for speed: %s", source, source_type, target, cached
        )
        partial = cached.with_name(f"{cached.name}.{os.getpid()}.partial")
        try:
            quantize(source, partial, target)
            os.replace(partial, cached)  # atomic: another process may be converting too
        except (OSError, RuntimeError) as exc:
            # on a read-only models folder (a container's volume) unlink fails too
            with contextlib.suppress(OSError):
                partial.unlink(missing_ok=True)
            log.warning("could not convert %s (%s); serving it as-is", source, exc)
            return Weights(path, setting, note=f"as-is: the conversion failed ({exc})")
    speeds = None
    if threads is not None:
        try:
            speeds = measured(source, cached, threads)
        except (OSError, RuntimeError) as exc:  # a file llama.cpp cannot load, a full disk
            log.warning("could not measure %s against %s (%s)", source, cached, exc)
    if speeds is not None and not speeds.is_converted_faster:
        return Weights(
            path,
            setting,
            note=f"as-is: {target.upper()} made from it decoded only {speeds.ratio:.2f}x as "
            f"fast on this CPU",
            speeds=speeds.as_dict(),
        )
    measured_note = f", {speeds.ratio:.2f}x as fast on this CPU" if speeds is not None else ""
    return Weights(
        str(cached),
        setting,
        converted_from=source_type,
        served_type=target.upper(),
        note=f"{source_type} has no fast CPU kernel; serving {target.upper()} made from it"
        + measured_note,
        speeds=speeds.as_dict() if speeds is not None else None,
    )


def file_type(path: str) -> int | None:
    """The GGUF's ``general.file_type`` (a llama_ftype), read from its header.

    Loading even the vocabulary through llama.cpp takes seconds for a 262k-token
    vocabulary; walking the header over a memory map takes milliseconds.
    """
    value = header_values(path, frozenset({"general.file_type"})).get("general.file_type")
    return value if isinstance(value, int) else None


def header_values(path: str, keys: frozenset[str]) -> dict[str, int | str]:
    """Integer and string values of ``keys`` in the GGUF's header (absent keys left out)."""
    found: dict[str, int | str] = {}
    try:
        with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
            if mm[:4] != b"GGUF":
                raise ValueError("not a GGUF file")
            num_kv = _u64(mm, 16)
            pos = 24
            for _ in range(num_kv):
                if pos >= len(mm) or len(found) == len(keys):
                    break
                key_len = _u64(mm, pos)
                key = mm[pos + 8 : pos + 8 + key_len].decode(errors="replace")
                pos += 8 + key_len
                kind = int.from_bytes(mm[pos : pos + 4], "little")
                pos += 4
                if key in keys and kind in _INTEGERS:
                    size, signed = _SIZES[kind], kind in (1, 3, 5, 11)
                    found[key] = int.from_bytes(mm[pos : pos + size], "little", signed=signed)
                elif key in keys and kind == 8:
                    found[key] = mm[pos + 8 : pos + 8 + _u64(mm, pos)].decode(errors="replace")
                pos = _skip(mm, pos, kind)
    except (OSError, ValueError) as exc:
        # served as-is: llama.cpp's own load then says what is wrong with the file
        log.warning("cannot read the GGUF header of %s: %s", path, exc)
    return found


# GGUF value types: fixed-size scalars by size; 8 is a string, 9 an array
_SIZES = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}
_INTEGERS = {0, 1, 2, 3, 4, 5, 10, 11}  # 6 and 12 are floats, 7 a bool


def _u64(mm: mmap.mmap, pos: int) -> int:
    return int.from_bytes(mm[pos : pos + 8], "little")


def _skip(mm: mmap.mmap, pos: int, kind: int) -> int:
    """The position after a value of GGUF type ``kind`` that starts at ``pos``."""
    if kind in _SIZES:
        return pos + _SIZES[kind]
    if kind == 8:
        return pos + 8 + _u64(mm, pos)
    if kind != 9:
        raise ValueError(f"unknown GGUF value type {kind}")
    item, count = int.from_bytes(mm[pos : pos + 4], "little"), _u64(mm, pos + 4)
    pos += 12
    if item in _SIZES:
        return pos + count * _SIZES[item]
    for _ in range(count):
        pos = _skip(mm, pos, item)
        if pos > len(mm):
            raise ValueError("an array runs past the end of the file")
    return pos


def sha256(path: Path) -> str:
    """The file's SHA-256, hashed once per version of the file in this process: every
    load of a model asks (0.4 s for a 100 MB file), and a replaced or rewritten file
    has another inode, size or mtime."""
    st = path.stat()
    return sha256_of_version(str(path.resolve()), st.st_ino, st.st_size, st.st_mtime_ns)


@functools.lru_cache(maxsize=64)
def sha256_of_version(path: str, inode: int, size: int, mtime_ns: int) -> str:
    del inode, size, mtime_ns  # the cache key: which version of the file
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()
