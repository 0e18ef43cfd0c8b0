"""The batching rule: max batch size or max wait, whichever comes first."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")
BURST_WAITS = 20  # the most a gathering burst may stretch the wait, in max_waits
# the silence tolerated between arrivals while fewer than expected are in, in max_waits
EXPECTED_GAP_WAITS = 4


async def collect_batch(
    queue: asyncio.Queue[T],
    max_size: int | Callable[[], int],
    max_wait: float | Callable[[], float],
    expect: int | Callable[[], int] = 1,
) -> list[T]:
    """Wait for a first item, then gather more until ``max_size`` or ``max_wait`` s.

    The wait starts at the first item, so a lone request waits at most
    ``max_wait`` and a burst fills the batch as soon as it arrives; each item that
    comes within ``max_wait`` of the one before extends the wait by as much, up to
    ``BURST_WAITS`` times ``max_wait`` in all, since a burst reaches the queue spread
    by the event loop's own work on each request (parsing, tokenizing: a few ms
    each on 2 cores), and cut at ``max_wait`` its tail had to wait out a whole
    step of the head's. ``expect``: how many items are likely on their way (the
    batcher counts slots that just freed: closed-loop clients send again as soon
    as they are answered); until that many are in, the silence tolerated between
    two arrivals is ``EXPECTED_GAP_WAITS`` times ``max_wait``, within the same cap.
    A wave of 16 answered together came back over ~20-40 ms of an event loop also
    busy writing the wave's last frames, and a 5 ms silence in it split the wave:
    a first group of 1-4 was prefilled alone while the rest waited out its step.
    The limits and ``expect`` may be callables, asked when the first item is in
    (what was free when the wait began may have grown since). Items
    already queued are taken without waiting. Uses ``asyncio.wait_for`` on
    the queue rather than polling, so an idle batcher costs nothing.

    Cancelled while gathering, it puts what it holds back into the queue
    before re-raising: an item taken is either returned or queued again.
    """
    batch = [await queue.get()]
    size = max_size() if callable(max_size) else max_size
    assert size >= 1
    loop = asyncio.get_running_loop()
    wait = max_wait() if callable(max_wait) else max_wait
    expected = min(size, expect() if callable(expect) else expect)
    started = loop.time()
    cap = started + BURST_WAITS * wait
    deadline = min(started + _gap(wait, len(batch), expected), cap)
    try:
        while len(batch) < size:
            if not queue.empty():
                batch.append(queue.get_nowait())
                continue
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            try:
                # On 3.11 wait_for returns an item that arrived as the timeout hit,
                # and a cancelled Queue.get leaves its item queued: nothing is lost.
                batch.append(await asyncio.wait_for(queue.get(), remaining))
            except TimeoutError:
                break
            deadline = min(loop.time() + _gap(wait, len(batch), expected), cap)
    except asyncio.CancelledError:
        for item in batch:
            queue.put_nowait(item)
        raise
    return batch


def _gap(wait: float, gathered: int, expected: int) -> float:
    """The silence after which gathering stops: longer while more are expected."""
    return wait * EXPECTED_GAP_WAITS if gathered < expected else wait
