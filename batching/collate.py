"""The batching rule: max batch size or max wait, whichever comes first."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


async def collect_batch(
    queue: asyncio.Queue[T],
    max_size: int | Callable[[], int],
    max_wait: float | Callable[[], float],
) -> list[T]:
    """Wait for a first item, then gather more until ``max_size`` or ``max_wait`` s.

    The wait starts at the first item, so a lone request waits at most
    ``max_wait`` and a burst fills the batch as soon as it arrives. Either limit
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
    deadline = loop.time() + (max_wait() if callable(max_wait) else max_wait)
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
    except asyncio.CancelledError:
        for item in batch:
            queue.put_nowait(item)
        raise
    return batch
