"""What loaded models hold, making room for a load, and unloading.

Memory: before a load the model's footprint is known (measured at an earlier
load of the same file, else estimated from its GGUF header). If it does not
fit ``server.memory_budget_mb`` (or ``max_loaded_models``), idle unpinned
models are unloaded, least recently used first; if busy models hold the room,
the request waits until its deadline, then gets a 503 with ``Retry-After``. A
model larger than the whole budget is refused at once. Idle models unload
when their keep-alive runs out (a reaper task).

``ModelRegistry`` (registry.py) is this plus which models exist, leases and loads.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

import anyio.to_thread

from server.errors import ApiError
from server.models.embeddings import Embedders
from server.models.loaded import LoadedModel
from server.models.loader import estimate_footprint, file_identity
from server.models.memory import (
    Resident,
    budget_bytes,
    choose_evictions,
    process_rss_bytes,
    return_freed_memory,
    split_shared,
)
from server.settings import Config
from speculative.footprint import Footprint

log = logging.getLogger(__name__)
REAP_S = 0.25  # how often idle models are checked against their keep-alive
MB = 1 << 20


class Residency:
    """The loaded models and the memory they hold, within the budget."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.loaded: dict[str, LoadedModel] = {}
        self.budget_bytes = budget_bytes(config.server.memory_budget_mb)
        self.num_unloads: dict[tuple[str, str], int] = {}  # (model, reason) -> count
        self._loading: dict[str, int] = {}  # loads under way -> bytes reserved for them
        self.unloading: dict[str, int] = {}  # unloads under way -> bytes not yet freed
        self._known: dict[str, tuple[str, Footprint]] = {}  # name -> (file identity, bytes)
        self._changed = asyncio.Event()  # replaced each time room may have freed
        self._reaper: asyncio.Task[None] | None = None
        self._wake_reaper = asyncio.Event()
        self.embedders = Embedders(lambda: self.config, self._embedders_changed)

    @property
    def used_bytes(self) -> int:
        """Bytes held by loaded models (a model file two of them share counts once) and
        reserved by loads and unloads under way."""
        exclusive, shared = self._sharing()
        pending = sum(self._loading.values()) + sum(self.unloading.values())
        return sum(exclusive.values()) + shared + pending

    def _footprints(self) -> dict[str, Footprint]:
        """What each loaded model holds, and each embedding context (``<name> embeddings``)."""
        held = {name: loaded.footprint for name, loaded in self.loaded.items()}
        held |= {f"{n} embeddings": h.footprint for n, h in self.embedders.held.items()}
        closing = enumerate(self.embedders.closing)
        return held | {f"{h.name} embeddings, closing {i}": h.footprint for i, h in closing}

    def _sharing(self) -> tuple[dict[str, int], int]:
        """(bytes each holder alone holds, bytes of model files two or more share)."""
        return split_shared(self._footprints())

    async def expected_footprint(self, name: str) -> Footprint:
        """Measured at the last load of this very file, else estimated from its header."""
        identity = file_identity(self.config.models[name].path)
        known = self._known.get(name)
        if known is not None and known[0] == identity:
            return known[1]
        footprint = await anyio.to_thread.run_sync(estimate_footprint, self.config, name)
        self._known[name] = (identity, footprint)
        return footprint

    async def _make_room(self, name: str, need: int, deadline: float) -> None:
        """Reserve ``need`` bytes for ``name``, unloading idle models as needed."""
        while True:
            changed = self._changed
            # a model frees on eviction what no other loaded model shares with it
            exclusive, shared = self._sharing()
            resident = [
                Resident(n, exclusive[n], m.last_used, not (m.is_busy or m.is_pinned))
                for n, m in self.loaded.items()
            ]
            for pending in (self._loading, self.unloading):  # counted, never chosen
                resident += [Resident(n, b, 0.0, False) for n, b in pending.items()]
            # embedding contexts: bytes in use, but no model slot, and never chosen (they
            # close when idle past their keep-alive, see embeddings.py)
            others = sum(b for n, b in exclusive.items() if n not in self.loaded)
            max_models = self.config.server.max_loaded_models
            victims = choose_evictions(
                resident,
                need,
                self.budget_bytes,
                max_models=max_models,
                shared_bytes=shared + others,
            )
            if victims is not None:
                self._loading[name] = need  # before any await: others see it taken
                evicted = [self.loaded.pop(v) for v in victims]
                for loaded in evicted:
                    log.info("unloading idle model %s to make room for %s", loaded.name, name)
                    await self._unload(loaded, "evicted")
                return
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                busy = [n for n, m in self.loaded.items() if m.is_busy or m.is_pinned]
                holders = busy + [f"{n} embeddings" for n in self.embedders.held]
                raise self._no_room(
                    name,
                    f"busy or pinned models and embedding contexts hold it "
                    f"({', '.join(holders) or 'loads and unloads under way'})",
                )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(changed.wait(), remaining)

    def _no_room(self, name: str, why: str) -> ApiError:
        return ApiError(
            503,
            f"model {name!r} cannot be loaded within the memory budget "
            f"({self.used_bytes / MB:.0f} of {self.budget_bytes / MB:.0f} MB in use) before "
            f"the request's deadline: {why}; retry later",
            {"Retry-After": "5"},
        )

    def _notify(self) -> None:
        """Room may have freed: wake whoever waits for it."""
        self._changed.set()
        self._changed = asyncio.Event()

    def _embedders_changed(self) -> None:
        self._start_reaper()
        self._notify()

    def _on_idle(self) -> None:
        self._notify()
        self._wake_reaper.set()

    def _start_reaper(self) -> None:
        if self._reaper is None:
            self._reaper = asyncio.get_running_loop().create_task(self._reap(), name="reaper")

    async def _reap(self) -> None:
        """Unload idle models whose keep-alive ran out."""
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake_reaper.wait(), REAP_S)
            self._wake_reaper.clear()
            now = time.monotonic()
            self.embedders.reap(now)
            for name, loaded in list(self.loaded.items()):
                if loaded.is_expired(now):
                    del self.loaded[name]
                    log.info("model %s idle past its keep-alive; unloading", name)
                    await self._unload(loaded, "expired")

    def memory(self) -> dict[str, int | None]:
        return {
            "rss_bytes": process_rss_bytes(),
            "budget_bytes": self.budget_bytes,
            "used_bytes": self.used_bytes,
            "max_loaded_models": self.config.server.max_loaded_models,
        }

    def embedding_bytes(self, name: str) -> int | None:
        """What the model's embedding context holds beyond the weights; None: none open."""
        held = self.embedders.held.get(name)
        return None if held is None else held.footprint.total_bytes - held.footprint.weights_bytes

    def estimated_bytes(self, name: str) -> int | None:
        known = self._known.get(name)
        return known[1].total_bytes if known is not None else None

    async def _unload(self, loaded: LoadedModel, why: str, *, drain: bool = False) -> None:
        """Unload (``drain``: once its requests have finished, up to ``drain_timeout_s``);
        its bytes count as used until freed."""
        self.unloading[loaded.name] = self.unloading.get(loaded.name, 0)
        self.unloading[loaded.name] += loaded.footprint.total_bytes
        try:
            deadline = time.monotonic() + self.config.server.drain_timeout_s
            while drain and loaded.is_busy and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            await self._stop(loaded, why)
        finally:
            self.unloading[loaded.name] -= loaded.footprint.total_bytes
            if not self.unloading[loaded.name]:
                del self.unloading[loaded.name]
            self._notify()

    async def _stop(self, loaded: LoadedModel, why: str) -> None:
        key = (loaded.name, why)
        self.num_unloads[key] = self.num_unloads.get(key, 0) + 1
        reason = loaded.executor.crash or "the server is shutting down"
        if why != "shutdown":
            reason = loaded.executor.crash or f"model {loaded.name!r} was unloaded ({why}); retry"
        await loaded.batcher.stop(reason)
        # the executor frees the model and contexts, once its thread is out of llama.cpp
        await anyio.to_thread.run_sync(loaded.executor.stop)
        loaded.batcher.fail_unanswered(reason)
        await anyio.to_thread.run_sync(return_freed_memory)
