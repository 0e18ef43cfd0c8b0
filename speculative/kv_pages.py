"""KV memory that follows use: a sequence's stream gives its pages back when it holds nothing.

With a KV stream per sequence, llama.cpp allocates every stream's cells up front
(16 x 2,048 cells of SmolLM2-135M: 720 MiB) and zeroes them, so the whole cache is
resident from the load on, whatever the requests are. The pages of a stream that
holds no cell are only ever read as masked padding, where zeros are what llama.cpp
puts itself, so handing them back to the OS (``madvise(MADV_DONTNEED)``: the next
touch maps a zero page) changes nothing the model computes; a stream then holds
memory for the cells written since it was last emptied.

The C API has no pointer to the cache, so ``find`` looks for it: llama.cpp puts each
layer's K and V tensor, (row, cells, streams), one after another in one buffer of the
size it logs. A probe token in cell 0 of stream 0 writes a row at every tensor's
start, so a candidate base is where a written row, then empty ones, appear at every
tensor's start, a tensor's size apart. Freed memory of an earlier cache can look the
same, so a second probe token (cell 1) must then change every candidate tensor's first
rows: only live memory answers a decode. Nothing found (another layout: sliding-window
layers keep two caches, a GPU holds them) leaves the cache as llama.cpp made it.
Memory is read through /proc/self/mem, where a range another thread unmapped meanwhile
is an error, not a crash.
"""

from __future__ import annotations

import ctypes
import logging
import mmap
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import BinaryIO

import numpy as np

log = logging.getLogger(__name__)
PAGE = mmap.PAGESIZE
MADV_DONTNEED = 4
RELEASE_AFTER_S = 5.0  # an emptied stream's pages are given back after this long
MAX_RUNS = 8  # written runs in a window of a fresh cache (probes), at most
MAPS = "/proc/self/maps"
MAX_CANDIDATES = 64  # freed memory of earlier caches may look like one
_libc = ctypes.CDLL(None, use_errno=True)
_libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
_libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p]


def anonymous_regions() -> dict[int, int]:
    """Start -> end of this process's private, writable, unnamed mappings (and the main
    heap: a cache under the mmap threshold, 32 MiB at most, can come from there).
    Neighbours are joined: the kernel keeps two mappings apart when their flags differ,
    and one allocation can span both."""
    regions: dict[int, int] = {}
    last = None
    try:
        maps = open(MAPS)  # noqa: SIM115
    except OSError:  # no /proc (macOS): nothing to search, the cache stays resident
        return regions
    with maps:
        for line in maps:
            fields = line.split()
            if fields[1] == "rw-p" and (len(fields) == 5 or fields[5] == "[heap]"):
                start, end = (int(x, 16) for x in fields[0].split("-"))
                if last is not None and regions[last] == start:
                    regions[last] = end
                else:
                    regions[start] = end
                    last = start
    return regions


def new_memory(before: dict[int, int], after: dict[int, int]) -> list[tuple[int, int]]:
    """The whole regions of ``after`` that hold memory mapped since ``before``. Whole, not
    only their new part: the kernel merges neighbouring mappings into one region, and a
    buffer may start in memory the allocator held already and end in the new part."""
    old = sorted(before.items())
    out = []
    for start, end in sorted(after.items()):
        cursor = start
        for o_start, o_end in old:
            if o_end <= cursor or o_start >= end:
                continue
            if o_start > cursor:
                break
            cursor = max(cursor, o_end)
        if cursor < end:
            out.append((start, end))
    return out


@dataclass(frozen=True, slots=True)
class Geometry:
    """The cache's shape: ``num_tensors`` tensors of ``num_streams`` x ``cells`` rows."""

    kv_bytes: int
    num_tensors: int
    num_streams: int
    cells: int

    @property
    def tensor_bytes(self) -> int:
        return self.kv_bytes // self.num_tensors

    @property
    def row_bytes(self) -> int:
        return self.tensor_bytes // (self.num_streams * self.cells)

    @property
    def is_readable(self) -> bool:
        """Tensors that sit back to back without padding: the layout ``find`` reads."""
        tensor = self.tensor_bytes
        return (
            self.num_tensors > 0
            and self.kv_bytes % self.num_tensors == 0
            and tensor % (self.num_streams * self.cells) == 0
            and (tensor // self.num_streams) % 64 == 0
        )


@dataclass(slots=True)
class KvPages:
    """The located cache: from ``base``, tensors ``geometry.tensor_bytes`` apart, each
    holding a slice of ``slice_bytes`` per stream (sequence)."""

    base: int
    geometry: Geometry

    @property
    def num_tensors(self) -> int:
        return self.geometry.num_tensors

    @property
    def slice_bytes(self) -> int:
        return self.geometry.tensor_bytes // self.geometry.num_streams

    @property
    def total_bytes(self) -> int:
        return self.geometry.kv_bytes

    def release(self, stream: int) -> None:
        """Give stream ``stream``'s pages back (it must hold no cell, and no pending copy
        may read it); a page it shares with a neighbouring stream stays."""
        tensor = self.geometry.tensor_bytes
        for i in range(self.num_tensors):
            start = self.base + i * tensor + stream * self.slice_bytes
            _drop_pages(start, start + self.slice_bytes)

    def release_all(self) -> None:
        _drop_pages(self.base, self.base + self.total_bytes)

    def resident_bytes(self) -> int:
        """Bytes of the cache in RAM now (``mincore``, whole pages)."""
        start = self.base - self.base % PAGE
        length = self.base + self.total_bytes - start
        pages = np.zeros(-(-length // PAGE), np.uint8)
        if _libc.mincore(start, length, pages.ctypes.data) != 0:
            return self.total_bytes
        return int(np.count_nonzero(pages & 1)) * PAGE

    def heads(self, stream: int) -> list[bytes | None]:
        """The first rows of every tensor's slice of ``stream`` (to see a decode change
        them: where V is stored transposed a cell's values are not a row, so no offset is
        assumed)."""
        tensor, row = self.geometry.tensor_bytes, self.geometry.row_bytes
        at = self.base + stream * self.slice_bytes
        with _memory() as mem:
            if mem is None:
                return [None] * self.num_tensors
            return [_read(mem, at + i * tensor, 4 * row) for i in range(self.num_tensors)]


def find(regions: list[tuple[int, int]], geometry: Geometry, stream: int) -> list[KvPages]:
    """Candidate places of a cache whose ``stream`` holds one token (cell 0), in
    ``regions``; the caller tells the live one apart with a second token."""
    if not geometry.is_readable:
        return []
    found: list[KvPages] = []
    with _memory() as mem:
        if mem is None:
            return []
        for start, end in regions:
            for base in _bases(mem, start, end, geometry, stream):
                found.append(KvPages(base, geometry))
                if len(found) >= MAX_CANDIDATES:
                    return found
    return found


def took_second_probe(before: list[bytes | None], after: list[bytes | None], row: int) -> bool:
    """Every tensor's first rows (``KvPages.heads``) read before and after a decode of a
    second probe token: the first row kept, the second written where it was empty, the
    rest still empty. Only the live cache answers so; freed memory of an earlier cache
    does not change, and a compute buffer that took its place changes otherwise."""
    return all(
        a is not None
        and b is not None
        and a[:row] == b[:row]
        and not any(a[row : 2 * row])
        and any(b[row : 2 * row])
        and not any(b[2 * row :])
        for a, b in zip(before, after, strict=True)
    )


def _drop_pages(start: int, end: int) -> None:
    """``MADV_DONTNEED`` the whole pages inside [start, end)."""
    first = -(-start // PAGE) * PAGE
    last = end // PAGE * PAGE
    if last > first and _libc.madvise(first, last - first, MADV_DONTNEED) != 0:
        log.warning("madvise failed (errno %d): KV pages stay resident", ctypes.get_errno())


@contextmanager
def _memory() -> Iterator[BinaryIO | None]:
    try:
        mem = open("/proc/self/mem", "rb", buffering=0)  # noqa: SIM115
    except OSError:
        yield None
        return
    with mem:
        yield mem


def _bases(mem: BinaryIO, start: int, end: int, geometry: Geometry, stream: int) -> Iterator[int]:
    """Bases in [start, end) with room for the whole cache after them, from which every
    tensor's slice of ``stream`` starts with a written row followed by empty ones.

    Not every byte is read: the probe rows sit a tensor's size apart over the whole
    cache, so any window of a tensor's size inside the cache holds one of them, and
    windows ``span - tensor`` apart put one inside the cache wherever it starts. A
    window inside a fresh cache is empty but for a few written runs (the probe's); each
    run's start, taken as every tensor's probe row in turn, names a base that the rows
    of all tensors then confirm or not (``_is_row`` on each: an empty row before the
    probe's, as the last cell of the previous tensor is, except at the very base)."""
    tensor, row, span = geometry.tensor_bytes, geometry.row_bytes, geometry.kv_bytes
    offset = stream * (tensor // geometry.num_streams)  # a multiple of 64: see is_readable
    if end - start < span:
        return
    stride = max(span - tensor, 64)
    windows = sorted({*range(start, end - tensor + 1, stride), end - tensor - (end - start) % 64})
    seen: set[int] = set()
    for at in windows:
        data = _read(mem, at, tensor)
        if data is None:
            return
        filled = np.flatnonzero(np.frombuffer(data, np.uint64).reshape(-1, 8).any(axis=1))
        runs = filled[np.r_[True, np.diff(filled) > 1]] if filled.size else filled
        if runs.size > MAX_RUNS:
            continue  # busy memory, not a window of a fresh cache
        for run in runs:
            for i in range(geometry.num_tensors):
                base = at + int(run) * 64 - i * tensor - offset
                if base in seen or base < start or base + span > end:
                    continue
                seen.add(base)
                rows = (base + offset + j * tensor for j in range(geometry.num_tensors))
                if all(_is_row(mem, r, row, r > base or stream > 0) for r in rows):
                    yield base


def _is_row(mem: BinaryIO, at: int, row: int, after_empty: bool) -> bool:
    """A written row at ``at``, then three empty ones; with ``after_empty``, an empty row
    before it too (the end of the previous tensor: its last stream's last cell), so a
    place inside the probe's row is not taken for its start."""
    before = row if after_empty else 0
    data = _read(mem, at - before, before + 4 * row)
    if data is None or any(data[:before]):
        return False
    return any(data[before : before + row]) and not any(data[before + row :])


def _read(mem: BinaryIO, at: int, size: int) -> bytes | None:
    try:
        return os.pread(mem.fileno(), size, at)
    except OSError:
        return None
