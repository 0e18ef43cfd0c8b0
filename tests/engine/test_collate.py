"""Gathering a batch: how long ``collect_batch`` waits, and for whom.

On a virtual clock (tests/virtual_clock.py): the margins here are tens of
milliseconds, and a loaded box's stall would push a real sleep past them.
"""

from __future__ import annotations

import asyncio

from batching.collate import BURST_WAITS, EXPECTED_GAP_WAITS, collect_batch
from tests.virtual_clock import on_virtual_clock


@on_virtual_clock
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


@on_virtual_clock
async def test_timeout_returns_a_partial_batch() -> None:
    queue: asyncio.Queue[int] = asyncio.Queue()
    queue.put_nowait(1)
    loop = asyncio.get_running_loop()
    started = loop.time()
    batch = await collect_batch(queue, max_size=4, max_wait=0.05)
    assert batch == [1]
    assert 0.04 <= loop.time() - started < 2.0


@on_virtual_clock
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


@on_virtual_clock
async def test_waits_for_the_first_item_however_long() -> None:
    queue: asyncio.Queue[int] = asyncio.Queue()
    asyncio.get_running_loop().call_later(0.1, queue.put_nowait, 7)
    assert await collect_batch(queue, max_size=2, max_wait=0.0) == [7]


@on_virtual_clock
async def test_nothing_is_lost_when_the_wait_times_out() -> None:
    queue: asyncio.Queue[int] = asyncio.Queue()
    queue.put_nowait(0)
    batch = await collect_batch(queue, max_size=2, max_wait=0.0)
    queue.put_nowait(1)
    assert batch == [0]
    assert await collect_batch(queue, max_size=2, max_wait=0.0) == [1]


@on_virtual_clock
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


@on_virtual_clock
async def test_a_burst_spread_past_the_wait_is_gathered_while_it_keeps_coming() -> None:
    """Items 40 ms apart with a 100 ms wait: all 6 (200 ms in all) join, and an item that
    comes after a longer pause does not."""
    queue: asyncio.Queue[int] = asyncio.Queue()

    async def producer() -> None:
        for i in range(6):
            queue.put_nowait(i)
            await asyncio.sleep(0.04)
        await asyncio.sleep(1.0)
        queue.put_nowait(99)

    task = asyncio.create_task(producer())
    batch = await collect_batch(queue, max_size=16, max_wait=0.1)
    assert batch == [0, 1, 2, 3, 4, 5]
    await task


@on_virtual_clock
async def test_a_never_ending_burst_is_cut_at_burst_waits() -> None:
    queue: asyncio.Queue[int] = asyncio.Queue()

    async def producer() -> None:
        for i in range(1000):
            queue.put_nowait(i)
            await asyncio.sleep(0.005)

    task = asyncio.create_task(producer())
    loop = asyncio.get_running_loop()
    started = loop.time()
    batch = await collect_batch(queue, max_size=10_000, max_wait=0.01)
    assert loop.time() - started < BURST_WAITS * 0.01 + 1.0
    assert 0 < len(batch) < 1000
    task.cancel()


async def spaced(queue: asyncio.Queue[int], count: int, gap: float) -> None:
    for i in range(count):
        queue.put_nowait(i)
        await asyncio.sleep(gap)


@on_virtual_clock
async def test_expected_items_are_waited_for_across_longer_silences() -> None:
    """Items 100 ms apart with a 50 ms wait: told 4 are coming, the gathering takes all 4;
    told nothing, it stops at the first silence (the split wave this prevents)."""
    for expect, want in ((4, [0, 1, 2, 3]), (1, [0])):
        queue: asyncio.Queue[int] = asyncio.Queue()
        task = asyncio.create_task(spaced(queue, 4, 0.1))
        assert await collect_batch(queue, max_size=16, max_wait=0.05, expect=expect) == want
        await task


@on_virtual_clock
async def test_once_the_expected_items_are_in_the_usual_wait_applies() -> None:
    queue: asyncio.Queue[int] = asyncio.Queue()
    task = asyncio.create_task(spaced(queue, 4, 0.1))
    assert await collect_batch(queue, max_size=16, max_wait=0.05, expect=2) == [0, 1]
    await task


@on_virtual_clock
async def test_an_expected_item_that_never_comes_costs_one_longer_silence() -> None:
    queue: asyncio.Queue[int] = asyncio.Queue()
    queue.put_nowait(0)
    loop = asyncio.get_running_loop()
    started = loop.time()
    assert await collect_batch(queue, max_size=16, max_wait=0.02, expect=8) == [0]
    assert EXPECTED_GAP_WAITS * 0.02 - 0.005 <= loop.time() - started < 1.0
