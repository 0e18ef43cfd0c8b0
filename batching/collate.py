"""The batching rule: max batch size or max wait, whichever comes first."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")
BURST_WAITS = 20  # the most a gathering burst may stretch the wait, in max_waits


async def collect_batch(
    queue: asyncio.Queue[T],
    max_size: int | Callable[[], int],
    max_wait: float | Callable[[], float],
) -> list[T]:
    """Wait for a first item, then gather more until ``max_size`` or ``max_wait`` s.

    The wait starts at the first item, so a lone request waits at most
    ``max_wait`` and a burst fills the batch as soon as it arrives; each item that
    comes within ``max_wait`` of the one before extends the wait by as much, up to
    ``BURST_WAITS`` times ``max_wait`` in all, since a burst reaches the queue spread
    by the event loop's own work on each request (parsing, tokenizing: a few ms
    each on 2 cores), and cut at ``max_wait`` its tail had to wait out a whole
    step of the head's. Either limit
    may be a callable, asked when the first item is in (what was free when the
    wait began may have grown since). Items
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
    deadline = loop.time() + wait
    cap = deadline + (BURST_WAITS - 1) * wait
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
            deadline = min(loop.time() + wait, cap)
    except asyncio.CancelledError:
        for item in batch:
            queue.put_nowait(item)
        raise
    return batch
