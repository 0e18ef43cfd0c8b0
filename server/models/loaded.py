"""A loaded model: executor, batcher, measured memory, and who is using it.

A model is *busy* while anything may still use it: requests running or waiting
in its batcher, and requests between ``ModelRegistry.get`` and the batcher
(tokenizing, say), which hold a lease. A busy model is never unloaded for
another. Once idle it stays loaded for its keep-alive (that of the last request
that named one, else the config's), then unloads; None keeps it (pinned).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from batching.batcher import Batcher
from batching.request import Request
from server.model_settings import ModelSettings
from speculative.executor import Executor
from speculative.footprint import Footprint
from speculative.llama import LlamaModel


@dataclass(slots=True, eq=False)
class LoadedModel:
    name: str
    settings: ModelSettings
    model: LlamaModel
    executor: Executor
    batcher: Batcher
    load_seconds: float
    identity: str  # the model file as it was when loaded: path, size, modification time
    footprint: Footprint
    keep_alive_s: float | None  # once idle; None: for ever
    loaded_at: float = field(default_factory=time.time)
    last_used: float = field(default_factory=time.monotonic)
    num_leases: int = 0  # callers between get() and submit()
    num_leases_taken: int = 0  # since the load: one per generation request, whatever its API
    held: set[Request] = field(default_factory=set)  # prepared requests not yet answered
    on_idle: Callable[[], None] | None = None
    placement: dict[str, Any] = field(default_factory=dict)  # layers and buffers per device

    @property
    def ctx_per_seq(self) -> int:
        return self.executor.ctx_per_seq

    @property
    def is_busy(self) -> bool:
        batcher = self.batcher
        return bool(self.num_leases or self.held or batcher.num_running or batcher.num_waiting)

    @property
    def is_pinned(self) -> bool:
        return self.keep_alive_s is None

    def lease(self) -> None:
        self.num_leases += 1
        self.num_leases_taken += 1
        self.last_used = time.monotonic()

    def release(self) -> None:
        """A lease ends without a request (the request was refused before queueing)."""
        self.num_leases -= 1
        self._touch()

    def hold(self, request: Request) -> None:
        """The caller's lease passes to ``request`` until it is answered."""
        self.num_leases -= 1
        self.held.add(request)

        def done(_: object) -> None:
            self.held.discard(request)
            self._touch()

        request.done.add_done_callback(done)

    def drop(self, request: Request) -> None:
        """``request`` was never queued (queue full, model stopping)."""
        self.held.discard(request)
        self._touch()

    def _touch(self) -> None:
        self.last_used = time.monotonic()
        if not self.is_busy and self.on_idle is not None:
            self.on_idle()

    def expires_at(self) -> float | None:
        """Unix time at which the idle model unloads; None while busy or pinned."""
        if self.is_busy or self.keep_alive_s is None:
            return None
        idle_for = time.monotonic() - self.last_used
        return time.time() - idle_for + self.keep_alive_s

    def is_expired(self, now: float) -> bool:
        keep = self.keep_alive_s
        return keep is not None and not self.is_busy and now - self.last_used >= keep

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
            "leases_taken": self.num_leases_taken,
            "keep_alive_s": self.keep_alive_s,
            "expires_at": self.expires_at(),
            # kv_resident_bytes: what of kv_bytes is in RAM now (null: all of it)
            "memory": self.footprint.as_dict()
            | {"kv_resident_bytes": self.executor.kv_resident_bytes},
            "executor": self.executor.stats.as_dict(),
            "step_budget": self.executor.budget.as_dict(),
            # by batch size: whether a step first waits for the loop to write the last one
            "loop_handoff": self.executor.handoff.choices(),
            "prefix_cache": dataclasses.asdict(self.executor.prefix_stats),
            # the shared KV pool's cells (kv_pool_tokens); null: a stream per sequence
            "kv_pool": dataclasses.asdict(pool.stats) if (pool := self.executor.pool) else None,
        }
