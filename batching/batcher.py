"""The asyncio batcher in front of one model's executor.

Requests wait in a bounded queue. When the executor has free sequence slots,
the batcher collects up to that many requests (``collect_batch``: max size or
max wait, whichever first) and hands them over; the executor admits them at
its next decode step, alongside the sequences already running. The wait
applies only when the executor is idle: while it is busy a newcomer joins at
the next step anyway, and waiting would only add latency.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Protocol

from batching.collate import collect_batch
from batching.request import FinishReason, Request, RequestStatus


class QueueFullError(Exception):
    """The waiting queue is at its limit; the client should retry later."""


class Admits(Protocol):
    def admit(self, requests: list[Request]) -> None: ...


class Batcher:
    def __init__(
        self, executor: Admits, *, max_batch_size: int, max_wait_ms: float, max_queue: int
    ) -> None:
        self._executor = executor
        self.max_batch_size = max_batch_size
        self._max_wait = max_wait_ms / 1000
        self.max_queue = max_queue
        self._queue: asyncio.Queue[Request] = asyncio.Queue()
        self.num_running = 0
        self._slot_freed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @property
    def num_waiting(self) -> int:
        return self._queue.qsize()

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="batcher")

    async def stop(self, reason: str = "the server is shutting down") -> None:
        """Stop admitting; requests still waiting fail with ``reason``."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        while not self._queue.empty():
            _finish_unstarted(self._queue.get_nowait(), FinishReason.ERROR, reason)

    def submit(self, request: Request) -> None:
        if self._queue.qsize() >= self.max_queue:
            raise QueueFullError(f"{self._queue.qsize()} requests are already waiting")
        self._queue.put_nowait(request)

    def on_done(self, request: Request) -> None:
        """Event loop: the executor finished ``request``; its slot is free again."""
        self.num_running -= 1
        self._slot_freed.set()

    async def _run(self) -> None:
        while True:
            while self.num_running >= self.max_batch_size:
                self._slot_freed.clear()
                await self._slot_freed.wait()
            wait = self._max_wait if self.num_running == 0 else 0.0
            batch = await collect_batch(self._queue, self.max_batch_size - self.num_running, wait)
            live = []
            now = time.monotonic()
            for request in batch:
                if request.is_cancel_requested:  # client left while it waited
                    _finish_unstarted(request, FinishReason.CANCELLED)
                elif request.is_past_deadline(now):
                    _finish_unstarted(request, FinishReason.TIMEOUT)
                else:
                    live.append(request)
            if live:
                self.num_running += len(live)
                self._executor.admit(live)


def _finish_unstarted(request: Request, reason: FinishReason, error: str | None = None) -> None:
    request.status = {
        FinishReason.ERROR: RequestStatus.FAILED,
        FinishReason.CANCELLED: RequestStatus.CANCELLED,
    }.get(reason, RequestStatus.FINISHED)
    request.finish_reason = reason
    request.error = error
    request.finished_at = time.monotonic()
    if request.stream is not None:
        request.stream.put_nowait(None)
    if not request.done.done():
        request.done.set_result(request)
