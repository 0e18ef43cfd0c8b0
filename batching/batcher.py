"""The asyncio batcher in front of one model's executor.

Requests wait in a bounded queue. When the executor has free sequence slots,
the batcher collects up to that many requests (``collect_batch``: max size or
max wait, whichever first) and hands them over; the executor admits them at
its next decode step, alongside the sequences already running. The wait
applies only when the executor is idle: while it is busy a newcomer joins at
the next step anyway, and waiting would only add latency. Slots that just
freed count as arrivals on their way, and the gathering tolerates longer
silences until that many are in (see ``collect_batch``).

Every request submitted here ends with an answer, whatever fails:

* a waiting request that is cancelled (client gone, task cancelled) leaves
  the queue at once; one past its deadline leaves within ``SWEEP_S``;
* a running request is answered by the executor; should the executor be
  wedged, the sweep answers it ``BACKSTOP_S`` after its deadline (its slot
  stays counted until the executor really lets go of it);
* ``stop`` fails what waits, and ``submit`` on a stopped batcher raises.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Callable
from functools import partial
from typing import Protocol

from batching.collate import BURST_WAITS, collect_batch
from batching.request import Failure, FinishReason, Request, RequestStatus

SWEEP_S = 0.1  # how often deadlines of waiting and running requests are checked
BACKSTOP_S = 1.0  # grace after a deadline before the loop answers for the executor
AGING_S = 10.0  # waiting this long raises a request's priority by one


class QueueFullError(Exception):
    """The waiting queue is at its limit; the client should retry later."""


class BatcherStoppedError(Exception):
    """The batcher was stopped (shutdown, or its executor died); retry later."""


class Admits(Protocol):
    def admit(self, requests: list[Request]) -> None: ...


class WaitingQueue(asyncio.Queue[Request]):
    """The waiting requests: highest priority first, then first come, first served.

    A request's effective priority grows by one for every ``AGING_S`` it
    waits, so no priority starves: a request that has waited ``AGING_S`` x
    (the difference in priority) goes before any newer higher-priority one.
    Cancelled or expired requests can be taken out from anywhere. (The
    subclass hooks ``_init``/``_put``/``_get`` are how asyncio's own
    PriorityQueue is built.)
    """

    _queue: list[Request]  # arrival order

    def _init(self, maxsize: int) -> None:
        self._queue = []

    def _put(self, item: Request) -> None:
        self._queue.append(item)

    def _get(self) -> Request:
        now = time.monotonic()
        queue = self._queue
        # max() keeps the first of equals: the earliest arrival among the best
        best = max(range(len(queue)), key=lambda i: effective_priority(queue[i], now))
        return queue.pop(best)

    def remove_where(self, predicate: Callable[[Request], bool]) -> list[Request]:
        removed = [r for r in self._queue if predicate(r)]
        if removed:
            self._queue = [r for r in self._queue if not predicate(r)]
        return removed


def effective_priority(request: Request, now: float) -> float:
    return request.priority + (now - request.created_at) / AGING_S


class Batcher:
    def __init__(
        self, executor: Admits, *, max_batch_size: int, max_wait_ms: float, max_queue: int
    ) -> None:
        self._executor = executor
        self.max_batch_size = max_batch_size
        self._max_wait = max_wait_ms / 1000
        self.max_queue = max_queue
        self._queue = WaitingQueue()
        self._running: set[Request] = set()  # admitted, not yet released by the executor
        # when slots were freed, oldest first, less those refilled since: each predicts an
        # arrival (a closed-loop client sends again once answered) for a gathering window
        self._freed: deque[float] = deque()
        self._slot_freed = asyncio.Event()
        self._has_requests = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self.stopped_reason: str | None = None

    @property
    def num_waiting(self) -> int:
        return self._queue.qsize()

    @property
    def num_running(self) -> int:
        return len(self._running)

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self._run(), name="batcher"),
            loop.create_task(self._sweep(), name="batcher-sweep"),
        ]

    async def stop(self, reason: str = "the server is shutting down") -> None:
        """Stop admitting; requests still waiting fail with ``reason``; later submits raise."""
        self.stopped_reason = reason
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for request in self._queue.remove_where(lambda r: True):
            _finish_unstarted(request, FinishReason.ERROR, reason)

    def fail_unanswered(self, reason: str) -> None:
        """After the executor stopped: answer running requests it never answered."""
        for request in self._running:
            _answer(request, FinishReason.ERROR, reason)

    def submit(self, request: Request) -> None:
        if self.stopped_reason is not None:
            raise BatcherStoppedError(self.stopped_reason)
        if self._queue.qsize() >= self.max_queue:
            raise QueueFullError(f"{self._queue.qsize()} requests are already waiting")
        request.on_cancel = self._on_cancel
        self._queue.put_nowait(request)
        self._has_requests.set()

    def on_done(self, request: Request) -> None:
        """Event loop: the executor finished ``request``; its slot is free again."""
        self._running.discard(request)
        self._freed.append(time.monotonic())
        self._slot_freed.set()

    def _on_cancel(self, request: Request) -> None:
        if request.status is RequestStatus.WAITING and self._queue.remove_where(
            lambda r: r is request
        ):
            _finish_unstarted(request, FinishReason.CANCELLED)

    async def _run(self) -> None:
        while True:
            while self.num_running >= self.max_batch_size:
                self._slot_freed.clear()
                await self._slot_freed.wait()
            # The room and whether the model is idle are asked when the first request
            # is in, not before: a wave of sequences finishing in one step frees its
            # slots one update at a time, and asked before, the batcher saw one slot
            # free, sent the first of the next wave alone, and the others waited out
            # that request's own prompt step.
            batch = await collect_batch(
                self._queue, self._room, self._idle_wait, expect=self.expected_arrivals
            )
            for _ in range(min(len(batch), len(self._freed))):
                self._freed.popleft()  # those slots are taken again
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
                self._running.update(live)
                # the sweep may have looked while these were gathered (in neither the
                # queue nor the running set) and gone to sleep: it has deadlines to watch
                self._has_requests.set()
                self._executor.admit(live)

    def _room(self) -> int:
        return self.max_batch_size - self.num_running

    def _idle_wait(self) -> float:
        return self._max_wait if self.num_running == 0 else 0.0

    def expected_arrivals(self) -> int:
        """Slots freed within the last gathering window and not refilled since."""
        horizon = time.monotonic() - BURST_WAITS * self._max_wait
        while self._freed and self._freed[0] < horizon:
            self._freed.popleft()
        return len(self._freed)

    async def _sweep(self) -> None:
        while True:
            if not self._queue.qsize() and not self._running:
                self._has_requests.clear()
                await self._has_requests.wait()
            await asyncio.sleep(SWEEP_S)
            now = time.monotonic()
            for request in self._queue.remove_where(partial(Request.is_past_deadline, now=now)):
                _finish_unstarted(request, FinishReason.TIMEOUT)
            late = now - BACKSTOP_S
            for request in self._running:
                if request.is_past_deadline(late):
                    _answer(request, FinishReason.TIMEOUT)


def _finish_unstarted(request: Request, reason: FinishReason, error: str | None = None) -> None:
    failure = Failure.UNAVAILABLE if reason is FinishReason.ERROR else None
    if request.claim_answer():
        request.mark_done(reason, error, failure)
    _resolve(request)


def _answer(request: Request, reason: FinishReason, error: str | None = None) -> None:
    """Answer a running request the executor has not answered (it may still hold its slot).

    The claim and the ending are written under the request's lock, where the executor
    checks ``is_answered`` before it appends anything: once this answers, the executor
    only lets go of the slot. If the executor claimed first, its ending stands.
    """
    if request.done.done():
        return
    with request.lock:
        if request.claim_answer():
            failure = Failure.UNAVAILABLE if reason is FinishReason.ERROR else None
            request.mark_done(reason, error, failure)
        elif not request.status.is_done:
            return  # the executor is writing its ending now: its update resolves it
    _resolve(request)


def _resolve(request: Request) -> None:
    if request.stream is not None:
        request.stream.put_nowait(None)
    if not request.done.done():
        request.done.set_result(request)
