"""Configured models, loaded on first use, each with its own executor and batcher.

A model loads once even when many first requests arrive together (a lock per
name); the load runs in a worker thread so the event loop keeps serving the
other models meanwhile. A load that fails is remembered for
``LOAD_RETRY_S``: requests meanwhile get the same 503 at once (with
``Retry-After``) instead of each trying again; after that the next request
tries again (after ``pull``, say).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio.to_thread

from batching.batcher import Batcher
from batching.bridge import LoopBridge
from batching.request import Request
from server.errors import ApiError
from server.models.gpu import describe_placement, placement_for
from server.models.weights import weights_for
from server.result_cache import ResultCache
from server.settings import Config, ModelSettings
from speculative.adaptive import SpeculationPolicy
from speculative.executor import Executor
from speculative.llama import LlamaContext, LlamaModel, ModelLoadError
from speculative.proposers import (
    DraftModelProposer,
    NgramProposer,
    Proposer,
    check_same_vocabulary,
)

log = logging.getLogger(__name__)
LOAD_RETRY_S = 5.0


@dataclass(slots=True)
class LoadFailure:
    error: ApiError
    at: float  # time.monotonic()

    def retry_in(self, now: float) -> float:
        return max(0.0, self.at + LOAD_RETRY_S - now)


@dataclass(slots=True, eq=False)
class LoadedModel:
    name: str
    settings: ModelSettings
    model: LlamaModel
    executor: Executor
    batcher: Batcher
    load_seconds: float
    identity: str  # the model file as it was when loaded: path, size, modification time
    placement: dict[str, Any] = field(default_factory=dict)  # layers and buffers per device
    loaded_at: float = field(default_factory=time.time)

    @property
    def ctx_per_seq(self) -> int:
        return self.executor.ctx_per_seq

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "context_size": self.ctx_per_seq,
            "max_batch_size": self.batcher.max_batch_size,
            "load_seconds": round(self.load_seconds, 3),
            "draft": self.settings.draft,
            "placement": self.placement,
            "weights": self.model.weights,
            "running": self.batcher.num_running,
            "waiting": self.batcher.num_waiting,
            "executor": self.executor.stats.as_dict(),
            "prefix_cache": dataclasses.asdict(self.executor.prefix_stats),
        }


class ModelRegistry:
    def __init__(
        self, config: Config, on_request_done: Callable[[Request], None] | None = None
    ) -> None:
        self.config = config
        self._on_request_done = on_request_done
        self.loaded: dict[str, LoadedModel] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self.failures: dict[str, LoadFailure] = {}
        cache_settings = config.server.result_cache
        self.result_cache = ResultCache(cache_settings) if cache_settings.enabled else None
        self.num_load_attempts: dict[str, int] = {}

    def resolve_name(self, name: str | None) -> str:
        name = name or self.config.server.default_model
        if name not in self.config.models:
            known = ", ".join(self.config.models)
            raise ApiError(404, f"model {name!r} is not configured; known models are {known}")
        return name

    async def get(self, name: str | None) -> LoadedModel:
        name = self.resolve_name(name)
        loaded = self.loaded.get(name)
        if loaded is not None and loaded.executor.is_alive:
            return loaded
        self._raise_recent_failure(name)
        async with self._locks.setdefault(name, asyncio.Lock()):
            loaded = self.loaded.get(name)
            if loaded is not None and not loaded.executor.is_alive:
                log.error("model %s lost its executor; loading it afresh", name)
                del self.loaded[name]
                await self._unload(loaded)
            if name not in self.loaded:
                self._raise_recent_failure(name)  # the load we waited for just failed
                try:
                    self.loaded[name] = await self._load(name)
                except ApiError as exc:
                    self.failures[name] = LoadFailure(exc, time.monotonic())
                    raise
                self.failures.pop(name, None)
        return self.loaded[name]

    def _raise_recent_failure(self, name: str) -> None:
        failure = self.failures.get(name)
        if failure is None:
            return
        retry_in = failure.retry_in(time.monotonic())
        if retry_in > 0:
            error = failure.error
            seconds = str(max(1, round(retry_in)))
            raise ApiError(error.status, error.message, {**error.headers, "Retry-After": seconds})

    async def _load(self, name: str) -> LoadedModel:
        settings = self.config.models[name]
        num_seqs = self.config.batch_size(name)
        started = time.perf_counter()
        self.num_load_attempts[name] = self.num_load_attempts.get(name, 0) + 1
        try:
            model, context, proposer = await anyio.to_thread.run_sync(
                _load_blocking, self.config, name
            )
        except ModelLoadError as exc:
            log.error("model %s failed to load: %s", name, exc)
            hint = f"; run `python -m server pull {name}`" if not model_exists(settings) else ""
            message = f"model {name!r} is unavailable: {exc}{hint}"
            raise ApiError(503, message, {"Retry-After": str(round(LOAD_RETRY_S))}) from None
        loop = asyncio.get_running_loop()
        holder: list[Batcher] = []  # the bridge needs the batcher, which needs the executor

        def on_done(request: Request) -> None:
            holder[0].on_done(request)
            if self._on_request_done is not None:
                self._on_request_done(request)

        bridge = LoopBridge(loop, on_done=on_done)
        policy = None
        if proposer is not None:
            policy = SpeculationPolicy(
                settings.num_draft_tokens,
                settings.max_speculative_batch,
                is_adaptive=settings.adaptive_speculation,
            )
        server = self.config.server
        executor = Executor(
            name,
            context,
            num_seqs,
            bridge.publish,
            proposer,
            policy,
            prefix_cache=settings.prefix_cache,
            prefix_cache_bytes=server.prefix_cache_mb << 20,
        )
        batcher = Batcher(
            executor,
            max_batch_size=num_seqs,
            max_wait_ms=server.max_wait_ms,
            max_queue=server.max_queue,
        )
        holder.append(batcher)
        executor.start()
        batcher.start()
        seconds = time.perf_counter() - started
        log.info("model %s loaded in %.2fs", name, seconds)
        stat = Path(settings.path).stat()
        identity = f"{settings.path}:{stat.st_size}:{stat.st_mtime_ns}"
        placement = describe_placement(settings, context)
        return LoadedModel(name, settings, model, executor, batcher, seconds, identity, placement)

    @property
    def num_busy(self) -> int:
        """Requests running or queued, over all loaded models."""
        return sum(m.batcher.num_running + m.batcher.num_waiting for m in self.loaded.values())

    async def close(self) -> None:
        for loaded in self.loaded.values():
            await self._unload(loaded)
        self.loaded.clear()

    async def _unload(self, loaded: LoadedModel) -> None:
        reason = loaded.executor.crash or "the server is shutting down"
        await loaded.batcher.stop(reason)
        # the executor frees the model and contexts, once its thread is out of llama.cpp
        await anyio.to_thread.run_sync(loaded.executor.stop)
        loaded.batcher.fail_unanswered(reason)


def model_exists(settings: ModelSettings) -> bool:
    return Path(settings.path).is_file()


def open_model(name: str, settings: ModelSettings) -> LlamaModel:
    """Load a model's weights where its settings put them, in the form they name."""
    placement = placement_for(name, settings)
    weights = weights_for(settings.path, settings.weights, placement)
    model = LlamaModel(weights.path, placement)
    model.weights = weights.as_dict()
    return model


def _load_blocking(config: Config, name: str) -> tuple[LlamaModel, LlamaContext, Proposer | None]:
    """Load a model, its context and, if configured, its draft proposer (worker thread)."""
    settings = config.models[name]
    num_seqs = config.batch_size(name)

    def context_for(model: LlamaModel) -> LlamaContext:
        return LlamaContext(
            model,
            ctx_per_seq=settings.context_size,
            num_seqs=num_seqs,
            batch_tokens=max(settings.batch_tokens, num_seqs),
            threads=config.threads(name),
        )

    opened: list[LlamaModel | LlamaContext] = []
    try:
        model = open_model(name, settings)
        opened.append(model)
        context = context_for(model)
        opened.append(context)
        proposer: Proposer | None = None
        if settings.draft == "ngram":
            proposer = NgramProposer()
        elif settings.draft is not None:
            draft = open_model(settings.draft, config.models[settings.draft])
            opened.append(draft)
            check_same_vocabulary(model, draft, (name, settings.draft))
            proposer = DraftModelProposer(context_for(draft))
    except BaseException:
        for thing in reversed(opened):
            thing.close()
        raise
    return model, context, proposer
