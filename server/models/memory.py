"""Process memory and the budget models share: RSS, the default budget, eviction order.

``choose_evictions`` is the whole policy, a pure function: which idle models,
least recently used first, must go so that a model needing ``need`` bytes fits.
Busy and pinned models are never chosen; when even evicting every candidate
would not make room, it says so (None) and the caller waits or refuses.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from speculative.footprint import Footprint

DEFAULT_BUDGET_SHARE = 0.5  # of MemAvailable at start-up, when no budget is set


def process_rss_bytes() -> int:
    """Resident set size of this process (Linux: /proc/self/statm)."""
    try:
        resident = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, IndexError, ValueError):
        return 0
    return resident * os.sysconf("SC_PAGE_SIZE")


def available_memory_bytes() -> int:
    """MemAvailable from /proc/meminfo (free plus reclaimable page cache), or less where
    the process's cgroup (a container's memory limit) leaves less: /proc/meminfo shows
    the host's memory inside a container."""
    available = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                available = int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return min(available, cgroup_room_bytes() or available)


def cgroup_room_bytes() -> int | None:
    """What the cgroup v2 memory limit leaves (memory.max less memory.current); None
    where there is no limit or no cgroup v2."""
    root = Path("/sys/fs/cgroup")
    try:
        limit = (root / "memory.max").read_text().strip()
        if limit == "max":
            return None
        return max(0, int(limit) - int((root / "memory.current").read_text()))
    except (OSError, ValueError):
        return None


def machine_shortfall(need: int) -> int | None:
    """The bytes available now when they are fewer than ``need``: a load that would
    push the machine (or the container) into swap or the OOM killer; else None."""
    available = available_memory_bytes()
    return available if need > available else None


def budget_bytes(memory_budget_mb: float | None) -> int:
    if memory_budget_mb is not None:
        return round(memory_budget_mb * (1 << 20))
    return round(available_memory_bytes() * DEFAULT_BUDGET_SHARE)


def return_freed_memory() -> None:
    """Ask glibc to hand freed heap pages back to the kernel, so RSS really falls
    after an unload (llama.cpp frees its buffers, but glibc may keep them mapped)."""
    name = ctypes.util.find_library("c")
    if name is None:
        return
    libc = ctypes.CDLL(name)
    if hasattr(libc, "malloc_trim"):
        libc.malloc_trim(0)


@dataclass(slots=True, frozen=True)
class Resident:
    """What eviction needs to know of a loaded model."""

    name: str
    num_bytes: int
    last_used: float  # time.monotonic()
    is_evictable: bool  # idle and not pinned


def choose_evictions(
    resident: Sequence[Resident],
    need: int,
    budget: int,
    *,
    max_models: int | None = None,
    shared_bytes: int = 0,
) -> list[str] | None:
    """Names to unload, least recently used first, so ``need`` more bytes (and one more
    model) fit; [] when they fit already; None when they cannot fit now. Models being
    loaded count as busy residents. ``num_bytes`` is what evicting a model frees;
    ``shared_bytes``, weights two or more models share, stay while any holds them."""
    used = shared_bytes + sum(r.num_bytes for r in resident)
    count = len(resident)
    chosen: list[str] = []
    candidates = sorted((r for r in resident if r.is_evictable), key=lambda r: r.last_used)
    for candidate in [None, *candidates]:
        if candidate is not None:
            chosen.append(candidate.name)
            used -= candidate.num_bytes
            count -= 1
        if used + need <= budget and (max_models is None or count < max_models):
            return chosen
    return None


def split_shared(footprints: dict[str, Footprint]) -> tuple[dict[str, int], int]:
    """(bytes each holder alone holds, bytes of model files two or more holders share):
    a file open for two models (or a model and its embedding context) is held once."""
    holders: dict[str, int] = {}
    for footprint in footprints.values():
        for path in footprint.files:
            holders[path] = holders.get(path, 0) + 1
    exclusive: dict[str, int] = {}
    shared: dict[str, int] = {}
    for name, footprint in footprints.items():
        common = {p: b for p, b in footprint.files.items() if holders[p] > 1}
        exclusive[name] = footprint.total_bytes - sum(common.values())
        shared |= common
    return exclusive, sum(shared.values())
