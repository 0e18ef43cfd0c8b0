"""Configured models, loaded on first use, within a memory budget, unloaded when idle.

A model loads once even when many first requests arrive together (a lock per
name); the load runs in a worker thread so the event loop keeps serving the
other models meanwhile. A load that fails is remembered for
``LOAD_RETRY_S``: requests meanwhile get the same 503 at once (with
``Retry-After``) instead of each trying again; after that the next request
tries again (after ``pull``, say).

A load happens within the memory budget: idle models are unloaded to make room for it
(``Residency``, residency.py, which this registry extends).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import anyio.to_thread

from batching.request import Request
from server.duration import parse_keep_alive
from server.errors import ApiError
from server.models.gpu import describe_placement
from server.models.loaded import LoadedModel
from server.models.loader import (
    file_identity,
    load_blocking,
    load_key,
    model_exists,
    start_serving,
)
from server.models.memory import budget_bytes, machine_shortfall
from server.models.residency import MB, Residency
from server.result_cache import ResultCache
from server.settings import Config
from speculative.llama import ModelLoadError

log = logging.getLogger(__name__)
LOAD_RETRY_S = 5.0


@dataclass(slots=True)
class LoadFailure:
    error: ApiError
    at: float  # time.monotonic()

    def retry_in(self, now: float) -> float:
        return max(0.0, self.at + LOAD_RETRY_S - now)


class ModelRegistry(Residency):
    def __init__(
        self, config: Config, on_request_done: Callable[[Request], None] | None = None
    ) -> None:
        super().__init__(config)
        self._on_request_done = on_request_done
        self._locks: dict[str, asyncio.Lock] = {}
        self.failures: dict[str, LoadFailure] = {}
        cache_settings = config.server.result_cache
        self.result_cache = ResultCache(cache_settings) if cache_settings.enabled else None
        self.num_load_attempts: dict[str, int] = {}
        self._retiring: set[asyncio.Future[None]] = set()  # unloads after a config change

    def resolve_name(self, name: str | None) -> str:
        model = self.config.model_named(name or None)  # aliases and the opt-in fallback
        if model is None:
            known = ", ".join(self.config.models)
            message = (
                f"model {name!r} is not configured; known models are {known} (aliases can be "
                "configured, and server.unknown_model_fallback serves any name with the default)"
            )
            raise ApiError(404, message)
        return model

    async def get(self, name: str | None, wait_s: float | None = None) -> LoadedModel:
        """The loaded model, leased to the caller (``hold`` or ``release`` it).

        ``wait_s``: how long to wait for room in the budget (default: the server's
        request timeout)."""
        name = self.resolve_name(name)
        loaded = self.loaded.get(name)
        if loaded is not None and loaded.executor.is_alive:
            loaded.lease()
            return loaded
        self._raise_recent_failure(name)
        self._start_reaper()
        deadline = time.monotonic() + (wait_s or self.config.server.request_timeout_s)
        lock = self._locks.setdefault(name, asyncio.Lock())
        try:
            await asyncio.wait_for(lock.acquire(), max(0.0, deadline - time.monotonic()))
        except TimeoutError:
            raise self._no_room(name, "it is still being loaded or unloaded") from None
        try:
            loaded = self.loaded.get(name)
            if loaded is not None and not loaded.executor.is_alive:
                log.error("model %s lost its executor; loading it afresh", name)
                del self.loaded[name]
                await self._unload(loaded, "crashed")
            if name not in self.loaded:
                self._raise_recent_failure(name)  # the load we waited for just failed
                self.loaded[name] = await self._load_within_budget(name, deadline)
                self.failures.pop(name, None)
            loaded = self.loaded[name]
        finally:
            lock.release()
        loaded.lease()
        return loaded

    def _raise_recent_failure(self, name: str) -> None:
        failure = self.failures.get(name)
        if failure is None:
            return
        retry_in = failure.retry_in(time.monotonic())
        if retry_in > 0:
            error = failure.error
            seconds = str(max(1, round(retry_in)))
            raise ApiError(error.status, error.message, {**error.headers, "Retry-After": seconds})

    def _failed(self, name: str, exc: ModelLoadError) -> ApiError:
        log.error("model %s failed to load: %s", name, exc)
        settings = self.config.models[name]
        hint = f"; run `python -m server pull {name}`" if not model_exists(settings) else ""
        message = f"model {name!r} is unavailable: {exc}{hint}"
        error = ApiError(503, message, {"Retry-After": str(round(LOAD_RETRY_S))})
        self.failures[name] = LoadFailure(error, time.monotonic())
        return error

    async def _load_within_budget(self, name: str, deadline: float) -> LoadedModel:
        self.num_load_attempts[name] = self.num_load_attempts.get(name, 0) + 1
        try:
            expected = await self.expected_footprint(name)
        except ModelLoadError as exc:
            raise self._failed(name, exc) from None
        need = expected.total_bytes
        open_files = {p for f in self._footprints().values() for p in f.files}
        already_open = sum(b for p, b in expected.files.items() if p in open_files)
        if need > self.budget_bytes:
            raise ApiError(
                503,
                f"model {name!r} needs about {need / MB:.0f} MB (weights, KV cache, buffers) "
                f"but the memory budget is {self.budget_bytes / MB:.0f} MB; raise "
                "server.memory_budget_mb, or lower the model's context_size or max_batch_size or "
                "set its kv_pool_tokens",
                {"Retry-After": "60"},
            )
        await self._make_room(name, need - already_open, deadline)
        try:
            if (available := machine_shortfall(need - already_open)) is not None:
                raise ApiError(
                    503,
                    f"model {name!r} needs about {(need - already_open) / MB:.0f} MB (weights, "
                    f"KV cache, buffers) but the machine has {available / MB:.0f} MB available "
                    "now; free memory, or lower the model's context_size or max_batch_size or "
                    "set its kv_pool_tokens",
                    {"Retry-After": "60"},
                )
            return await self._load(name)
        finally:
            del self._loading[name]
            self._notify()

    # -- loading and unloading --------------------------------------------------

    async def _load(self, name: str) -> LoadedModel:
        settings = self.config.models[name]
        started = time.perf_counter()
        identity = file_identity(settings.path)
        try:
            model, context, proposer, footprint = await anyio.to_thread.run_sync(
                load_blocking, self.config, name
            )
        except ModelLoadError as exc:
            raise self._failed(name, exc) from None
        self._known[name] = (identity, footprint)
        executor, batcher = start_serving(self.config, name, context, proposer, self._on_done)
        seconds = time.perf_counter() - started
        log.info("model %s loaded in %.2fs, %.0f MB", name, seconds, footprint.total_bytes / MB)
        loaded = LoadedModel(
            name,
            settings,
            model,
            executor,
            batcher,
            seconds,
            identity,
            footprint,
            self.config.keep_alive_s(name),
        )
        loaded.on_idle = self._on_idle
        loaded.placement = describe_placement(settings, context)
        return loaded

    def _on_done(self, request: Request) -> None:
        if self._on_request_done is not None:
            self._on_request_done(request)

    def apply_config(self, config: Config) -> dict[str, list[str]]:
        """Switch to ``config``: removed and changed models leave ``loaded`` now (new
        requests see the new config) and unload once their requests have finished."""
        old, self.config = self.config, config
        if old.server.memory_budget_mb != config.server.memory_budget_mb:
            self.budget_bytes = budget_bytes(config.server.memory_budget_mb)
        changes: dict[str, list[str]] = {
            "added": [n for n in config.models if n not in old.models],
            "removed": [n for n in old.models if n not in config.models],
            "changed": [
                n
                for n in config.models
                if n in old.models and load_key(old, n) != load_key(config, n)
            ],
        }
        for name in changes["removed"] + changes["changed"]:
            self.failures.pop(name, None)
            self._known.pop(name, None)
            if (loaded := self.loaded.pop(name, None)) is not None:
                why = "removed" if name in changes["removed"] else "changed"
                task = asyncio.ensure_future(self._unload(loaded, why, drain=True))
                self._retiring.add(task)
                task.add_done_callback(self._retiring.discard)
        for name, loaded in self.loaded.items():
            if old.keep_alive_s(name) != config.keep_alive_s(name):
                loaded.keep_alive_s = config.keep_alive_s(name)
        self.embedders.retire(changes["removed"] + changes["changed"])
        self.embedders.set_keep_alive(config)
        self._notify()
        return changes

    async def load(self, name: str, keep_alive: float | str | None = None) -> LoadedModel:
        """Load ``name`` now (``POST /models/{name}/load``), optionally setting its keep-alive."""
        loaded = await self.get(name)
        if keep_alive is not None:
            loaded.keep_alive_s = parse_keep_alive(keep_alive)
        loaded.release()
        return loaded

    async def unload(self, name: str) -> bool:
        """Drain ``name`` (its requests finish, new ones wait), then unload it, and close its
        embedding context; False when neither was open. Requests still running after
        ``drain_timeout_s`` fail."""
        name = self.resolve_name(name)
        had_embeddings = self.embedders.retire([name], "by an unload")
        async with self._locks.setdefault(name, asyncio.Lock()):
            loaded = self.loaded.get(name)
            if loaded is None:
                return had_embeddings
            del self.loaded[name]  # new requests wait for the lock, then load it again
            await self._unload(loaded, "requested", drain=True)
            return True

    @property
    def num_busy(self) -> int:
        """Requests running or queued, over all loaded models."""
        return sum(m.batcher.num_running + m.batcher.num_waiting for m in self.loaded.values())

    async def close(self) -> None:
        if self._reaper is not None:
            self._reaper.cancel()
        await asyncio.gather(*self._retiring)
        for loaded in self.loaded.values():
            await self._unload(loaded, "shutdown")
        self.loaded.clear()
        await self.embedders.close()
