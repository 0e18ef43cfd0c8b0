from __future__ import annotations

import asyncio

from batching.collate import collect_batch


async def test_full_batch_returns_without_waiting() -> None:
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(5):
        queue.put_nowait(i)
    loop = asyncio.get_running_loop()
    started = loop.time()
    batch = await collect_batch(queue, max_size=3, max_wait=10.0)
    assert batch == [0, 1, 2]
    assert loop.time() - started < 1.0
    assert queue.qsize() == 2


async def test_timeout_returns_a_partial_batch() -> None:
    queue: asyncio.Queue[int] = asyncio.Queue()
    queue.put_nowait(1)
    loop = asyncio.get_running_loop()
    started = loop.time()
    batch = await collect_batch(queue, max_size=4, max_wait=0.05)
    assert batch == [1]
    assert 0.04 <= loop.time() - started < 2.0


async def test_items_arriving_within_the_wait_join_the_batch() -> None:
    queue: asyncio.Queue[int] = asyncio.Queue()

    async def producer() -> None:
        for i in range(3):
            await asyncio.sleep(0.01)
            queue.put_nowait(i)

    task = asyncio.create_task(producer())
    batch = await collect_batch(queue, max_size=3, max_wait=5.0)
    await task
    assert batch == [0, 1, 2]


async def test_waits_for_the_first_item_however_long() -> None:
    queue: asyncio.Queue[int] = asyncio.Queue()
    asyncio.get_running_loop().call_later(0.1, queue.put_nowait, 7)
    assert await collect_batch(queue, max_size=2, max_wait=0.0) == [7]


async def test_nothing_is_lost_when_the_wait_times_out() -> None:
    queue: asyncio.Queue[int] = asyncio.Queue()
    queue.put_nowait(0)
    batch = await collect_batch(queue, max_size=2, max_wait=0.0)
    queue.put_nowait(1)
    assert batch == [0]
    assert await collect_batch(queue, max_size=2, max_wait=0.0) == [1]


async def test_cancelled_while_gathering_puts_items_back() -> None:
    # found in review: Batcher.stop cancelled collection with requests held in a local list
    queue: asyncio.Queue[int] = asyncio.Queue()
    queue.put_nowait(1)
    queue.put_nowait(2)
    task = asyncio.create_task(collect_batch(queue, max_size=4, max_wait=10.0))
    await asyncio.sleep(0.05)  # it holds 1 and 2 and waits for more
    assert queue.empty()
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert [queue.get_nowait() for _ in range(queue.qsize())] == [1, 2]
