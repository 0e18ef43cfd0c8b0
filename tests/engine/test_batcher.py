"""The batcher's promises, on the event loop: every submitted request gets an answer.

The executor here is a recorder: these tests are about what the batcher does
with requests it holds, not about decoding (the live-server tests cover that).
"""

from __future__ import annotations

import asyncio
import time

import pytest

from batching.batcher import BACKSTOP_S, SWEEP_S, Batcher, BatcherStoppedError
from batching.collate import BURST_WAITS
from batching.request import FinishReason, Request, RequestStatus, SamplingParams


class Recorder:
    def __init__(self) -> None:
        self.admitted: list[Request] = []

    def admit(self, requests: list[Request]) -> None:
        for request in requests:
            request.status = RequestStatus.RUNNING
        self.admitted += requests


def new_request(timeout: float = 60.0) -> Request:
    request = Request(model="m", prompt_tokens=[1, 2], params=SamplingParams())
    request.deadline = request.created_at + timeout
    return request


async def full_batcher(size: int = 1) -> tuple[Batcher, Recorder]:
    recorder = Recorder()
    batcher = Batcher(recorder, max_batch_size=size, max_wait_ms=0, max_queue=8)
    batcher.start()
    for _ in range(size):
        batcher.submit(new_request())
    await asyncio.sleep(0.01)
    assert len(recorder.admitted) == size
    return batcher, recorder


async def test_cancelled_waiter_leaves_the_full_queue_at_once() -> None:
    batcher, _ = await full_batcher()
    waiting = new_request()
    batcher.submit(waiting)
    waiting.cancel()
    assert waiting.done.done() and waiting.status is RequestStatus.CANCELLED
    assert batcher.num_waiting == 0
    await batcher.stop()


async def test_expired_waiter_leaves_within_a_sweep() -> None:
    batcher, _ = await full_batcher()
    waiting = new_request(timeout=0.2)
    batcher.submit(waiting)
    started = time.monotonic()
    await asyncio.wait_for(waiting.done, 2)
    assert time.monotonic() - started < 0.2 + 3 * SWEEP_S
    assert waiting.finish_reason is FinishReason.TIMEOUT and batcher.num_waiting == 0
    await batcher.stop()


async def test_stop_fails_waiters_and_refuses_new_work() -> None:
    batcher, _ = await full_batcher()
    waiting = new_request()
    batcher.submit(waiting)
    await batcher.stop("going away")
    assert waiting.done.done() and waiting.status is RequestStatus.FAILED
    assert waiting.error == "going away"
    with pytest.raises(BatcherStoppedError, match="going away"):
        batcher.submit(new_request())


async def test_stop_while_collecting_loses_nothing() -> None:
    recorder = Recorder()
    # an idle batcher waits max_wait to gather a batch: stop it in the middle
    batcher = Batcher(recorder, max_batch_size=4, max_wait_ms=10_000, max_queue=8)
    batcher.start()
    held = [new_request(), new_request()]
    for request in held:
        batcher.submit(request)
    await asyncio.sleep(0.05)
    await batcher.stop()
    assert not recorder.admitted
    assert all(r.done.done() and r.status is RequestStatus.FAILED for r in held)


async def test_backstop_answers_a_running_request_the_executor_never_answers() -> None:
    batcher, recorder = await full_batcher()
    stuck = recorder.admitted[0]
    stuck.deadline = time.monotonic() + 0.1
    await asyncio.wait_for(stuck.done, 0.1 + BACKSTOP_S + 1)
    assert stuck.finish_reason is FinishReason.TIMEOUT
    # its slot stays taken until the executor lets go of it
    assert batcher.num_running == 1
    batcher.on_done(stuck)
    assert batcher.num_running == 0
    await batcher.stop()


async def test_backstop_sees_a_request_admitted_after_a_long_gathering_wait() -> None:
    # While the batcher gathers, a request is in neither the queue nor the running set:
    # a sweep that looked then used to go to sleep until the next submit, and a wedged
    # executor's request was never answered (CI saw a 504 come after the 10 s step).
    recorder = Recorder()
    batcher = Batcher(recorder, max_batch_size=4, max_wait_ms=3 * SWEEP_S * 1000, max_queue=8)
    batcher.start()
    stuck = new_request(timeout=4 * SWEEP_S)  # admitted before its deadline, then wedged
    batcher.submit(stuck)
    await asyncio.wait_for(stuck.done, 4 * SWEEP_S + BACKSTOP_S + 1)
    assert recorder.admitted == [stuck] and stuck.finish_reason is FinishReason.TIMEOUT
    await batcher.stop()


async def test_priority_first_then_arrival_and_waiting_ages() -> None:
    from batching.batcher import AGING_S, WaitingQueue

    queue = WaitingQueue()
    first, second = new_request(), new_request()
    urgent = new_request()
    urgent.priority = 10
    for request in (first, second, urgent):
        queue.put_nowait(request)
    assert queue.get_nowait() is urgent
    assert queue.get_nowait() is first  # equal priorities: first come, first served
    old, newer = new_request(), new_request()
    newer.priority = 2
    old.created_at -= 3 * AGING_S  # waited long enough to outrank a newer priority 2
    queue.put_nowait(newer)
    queue.put_nowait(old)
    assert queue.get_nowait() is old


async def test_requests_a_stopped_executor_never_answered_are_failed() -> None:
    batcher, recorder = await full_batcher()
    await batcher.stop("unloading")
    batcher.fail_unanswered("unloading")  # what the registry does after executor.stop()
    (running,) = recorder.admitted
    assert running.done.done() and running.status is RequestStatus.FAILED
    assert running.error == "unloading"


class Batches(Recorder):
    def __init__(self) -> None:
        super().__init__()
        self.sizes: list[int] = []

    def admit(self, requests: list[Request]) -> None:
        self.sizes.append(len(requests))
        super().admit(requests)


# The gathering wait of the wave tests: the margins below are multiples of it, wide
# enough that a loaded box's stall of the loop (~100 ms) does not cross them.
WAVE_WAIT_S = 0.15


async def running_wave() -> tuple[Batcher, Batches, list[Request]]:
    """A batcher (4 slots, WAVE_WAIT_S wait) whose 4 slots run a wave of requests."""
    executor = Batches()
    batcher = Batcher(executor, max_batch_size=4, max_wait_ms=WAVE_WAIT_S * 1000, max_queue=8)
    batcher.start()
    wave = [new_request() for _ in range(4)]
    for request in wave:
        batcher.submit(request)
    await asyncio.sleep(2 * WAVE_WAIT_S)
    assert executor.sizes == [4]
    return batcher, executor, wave


async def test_a_wave_that_frees_its_slots_one_by_one_is_refilled_in_one_batch() -> None:
    """A step's finished sequences reach the loop one update at a time, and their clients'
    next requests a little later: the room is read when the first of those is in."""
    batcher, executor, wave = await running_wave()
    for request in wave:
        batcher.on_done(request)
        await asyncio.sleep(0)  # the batcher's loop runs between two updates
    for _ in range(4):
        batcher.submit(new_request())
        await asyncio.sleep(0.002)
    await asyncio.sleep(3 * WAVE_WAIT_S)
    assert executor.sizes == [4, 4]
    await batcher.stop()


async def test_freed_slots_are_expected_back_until_refilled_or_stale() -> None:
    """A wave answered together makes the next gathering wait for as many arrivals,
    across silences longer than max_wait (the wave came back split before)."""
    batcher, executor, wave = await running_wave()
    for request in wave:
        batcher.on_done(request)
    assert batcher.expected_arrivals() == 4
    for _ in range(4):  # two waits apart: past the wait, within the expected gap (four)
        batcher.submit(new_request())
        await asyncio.sleep(2 * WAVE_WAIT_S)
    await asyncio.sleep(6 * WAVE_WAIT_S)
    assert executor.sizes == [4, 4]
    assert batcher.expected_arrivals() == 0  # refilled
    batcher.on_done(executor.admitted[-1])
    assert batcher.expected_arrivals() == 1
    await asyncio.sleep((BURST_WAITS + 2) * WAVE_WAIT_S)  # past the window: not expected
    assert batcher.expected_arrivals() == 0
    await batcher.stop()
