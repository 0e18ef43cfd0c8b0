"""Embedding contexts of configured models, made on first use.

Kept apart from the generation registry: an embedding context is a second,
small llama.cpp context (its own model handle on the same memory-mapped file)
that serves ``/v1/embeddings`` without touching the model's executor or its
KV cache. One lock per model makes it once; its decodes run in a worker
thread, never on the event loop.
"""

from __future__ import annotations

import asyncio
import logging

import anyio.to_thread

from server.errors import ApiError
from server.models.loader import open_shared_model
from server.settings import Config
from speculative.embeddings import Embedder, Vectors
from speculative.llama import ModelLoadError

log = logging.getLogger(__name__)


class Embedders:
    def __init__(self, config: Config) -> None:
        self.config = config
        self._embedders: dict[str, Embedder] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    async def get(self, name: str) -> Embedder:
        """The embedder of a configured model (``name`` already resolved)."""
        if (embedder := self._embedders.get(name)) is not None:
            return embedder
        async with self._locks.setdefault(name, asyncio.Lock()):
            if name not in self._embedders:
                self._embedders[name] = await anyio.to_thread.run_sync(self._load, name)
        return self._embedders[name]

    def _load(self, name: str) -> Embedder:
        settings = self.config.models[name]
        try:
            embedder = Embedder(
                open_shared_model(name, settings),  # the generator's placement and weights
                max_tokens=settings.batch_tokens,
                max_seqs=self.config.batch_size(name),
                threads=self.config.threads(name),
            )
        except ModelLoadError as exc:
            message = f"model {name!r} cannot embed: {exc}"
            raise ApiError(503, message, {"Retry-After": "5"}) from None
        log.info("model %s: embedding context ready", name)
        return embedder

    async def embed(self, name: str, inputs: list[list[int]]) -> Vectors:
        embedder = await self.get(name)
        return await anyio.to_thread.run_sync(embedder.embed, inputs)

    async def close(self) -> None:
        for embedder in self._embedders.values():
            await anyio.to_thread.run_sync(embedder.close)
        self._embedders.clear()
