"""Embedding contexts of configured models, made on first use, owned by the registry.

An embedding context is a second, small llama.cpp context (its own model handle on
the same memory-mapped file) that serves ``/v1/embeddings`` without touching the
model's executor or its KV cache. One lock per model makes it once; its decodes run
in a worker thread, never on the event loop.

Like a loaded model it follows the registry: its bytes (context buffers, and the
weights when the generator does not hold the same file) count in the memory budget,
it is closed once idle past the model's keep-alive, and a config reload that changes
or removes the model retires it. A caller leases it (``lease``) for as long as it
uses it, so a retired or expired context is closed only once nobody is inside it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import anyio.to_thread

from batching.faults import FAULTS
from server.errors import ApiError
from server.models.loader import load_key, open_shared_model
from server.settings import Config
from speculative.embeddings import Embedder
from speculative.footprint import Footprint, measure
from speculative.llama import ModelLoadError

log = logging.getLogger(__name__)


@dataclass(slots=True, eq=False)
class Held:
    name: str
    embedder: Embedder
    footprint: Footprint  # files: the weights, shared with a generator of the same file
    keep_alive_s: float | None
    key: tuple[object, ...] = ()  # the model's load_key when it was made
    users: int = 0
    last_used: float = field(default_factory=time.monotonic)
    retired: bool = False

    def is_expired(self, now: float) -> bool:
        keep = self.keep_alive_s
        return self.users == 0 and keep is not None and now - self.last_used >= keep


class Embedders:
    def __init__(self, config: Callable[[], Config], on_change: Callable[[], None]) -> None:
        self._config = config  # the registry's current config
        self._on_change = on_change  # room may have changed
        self.held: dict[str, Held] = {}
        self.closing: list[Held] = []  # retired or expired, still allocated
        self._locks: dict[str, asyncio.Lock] = {}
        self._tasks: set[asyncio.Future[None]] = set()

    @contextlib.asynccontextmanager
    async def lease(self, name: str) -> AsyncIterator[Embedder]:
        """The embedder of a configured model (``name`` already resolved), in use
        until the block ends."""
        held = self.held.get(name)
        if held is None:
            async with self._locks.setdefault(name, asyncio.Lock()):
                held = self.held.get(name) or await self._open(name)
        held.users += 1
        try:
            yield held.embedder
        finally:
            held.users -= 1
            held.last_used = time.monotonic()
            if held.retired and held.users == 0:
                self._close_later(held)

    async def _open(self, name: str) -> Held:
        config = self._config()  # the config this context is made for
        if name not in config.models:
            raise ApiError(404, f"model {name!r} was just removed from the config")
        key = load_key(config, name)
        held = await anyio.to_thread.run_sync(self._load, config, name)
        held.key = key
        current = self._config()
        if name in current.models and load_key(current, name) == key:
            self.held[name] = held
        else:  # a reload changed or removed the model meanwhile: serve this request only
            log.info("model %s: config changed while its embedding context was made; it serves "
                     "the waiting request only", name)  # fmt: skip
            held.retired = True
            self.closing.append(held)
        self._on_change()
        return held

    def _load(self, config: Config, name: str) -> Held:
        FAULTS.delay("embedder_delay")
        settings = config.models[name]
        try:
            with measure() as measured:
                # the generator's placement and weights
                model = open_shared_model(name, settings, config.threads(name))
                embedder = Embedder(
                    model,
                    max_tokens=settings.batch_tokens,
                    max_seqs=config.batch_size(name),
                    threads=config.threads(name),
                )
        except ModelLoadError as exc:
            message = f"model {name!r} cannot embed: {exc}"
            raise ApiError(503, message, {"Retry-After": "5"}) from None
        footprint = measured.footprint()
        if not model.weights_bytes:  # opened here first (see loader.load_blocking)
            model.weights_bytes = measured.by_kind.get("model", 0)
        # a file the generator has open already is not read in again: its size counts
        # under the file, once, whoever holds it
        footprint.weights_bytes = model.weights_bytes
        footprint.files[settings.path] = footprint.weights_bytes
        log.info(
            "model %s: embedding context ready, %.0f MB (context %.0f MB)",
            name,
            footprint.total_bytes / (1 << 20),
            (footprint.total_bytes - footprint.weights_bytes) / (1 << 20),
        )
        return Held(name, embedder, footprint, config.keep_alive_s(name))

    def retire(self, names: list[str], why: str = "by the config change") -> bool:
        """Models changed or removed by a config reload (or unloaded): new requests get a
        fresh context (or a 404); the old one closes once its requests are done. True when
        one of them had a context."""
        found = False
        for name in names:
            if (held := self.held.pop(name, None)) is not None:
                log.info("model %s: embedding context retired %s", name, why)
                found = held.retired = True
                self.closing.append(held)
                if held.users == 0:
                    self._close_later(held)
        return found

    def set_keep_alive(self, config: Config) -> None:
        for name, held in self.held.items():
            if name in config.models:
                held.keep_alive_s = config.keep_alive_s(name)

    def reap(self, now: float) -> None:
        """Close contexts idle past their model's keep-alive."""
        for name, held in list(self.held.items()):
            if held.is_expired(now):
                log.info("model %s: embedding context idle past its keep-alive; closing", name)
                del self.held[name]
                self.closing.append(held)
                self._close_later(held)

    def _close_later(self, held: Held) -> None:
        task = asyncio.ensure_future(self._close(held))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _close(self, held: Held) -> None:
        try:
            await anyio.to_thread.run_sync(held.embedder.close)
        finally:
            self.closing.remove(held)  # its bytes count as used until here
            self._on_change()

    async def close(self) -> None:
        await asyncio.gather(*self._tasks)
        for held in [*self.held.values(), *self.closing]:
            await anyio.to_thread.run_sync(held.embedder.close)
        self.held.clear()
        self.closing.clear()
