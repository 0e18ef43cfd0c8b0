"""The executor -> event loop crossing: a wake-up that keeps the GIL, and its fallback."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from batching.bridge import LoopBridge, Update, wake_holding_gil
from batching.request import Request, SamplingParams


async def test_updates_published_from_a_thread_reach_the_loop() -> None:
    loop = asyncio.get_running_loop()
    assert wake_holding_gil(loop) is not None  # asyncio's selector loop: the fast path
    done: list[Request] = []
    bridge = LoopBridge(loop, done.append)
    requests = [Request(model="m", prompt_tokens=[1], params=SamplingParams()) for _ in range(3)]
    for request in requests:
        request.stream = asyncio.Queue()

    def executor() -> None:  # one step's updates, then another's, as the executor sends them
        bridge.publish([Update(r, f"piece {r.id}", is_done=False) for r in requests])
        bridge.publish([Update(r, "", is_done=True) for r in requests])

    thread = threading.Thread(target=executor)
    thread.start()
    await asyncio.wait_for(asyncio.gather(*(r.done for r in requests)), 5)
    thread.join()
    assert done == requests
    for request in requests:
        assert request.stream is not None
        assert [request.stream.get_nowait(), request.stream.get_nowait()] == [
            f"piece {request.id}",
            None,
        ]


def test_a_closed_loop_is_refused_like_call_soon_threadsafe() -> None:
    loop = asyncio.new_event_loop()
    wake = wake_holding_gil(loop)
    loop.close()
    assert wake is not None
    with pytest.raises(RuntimeError, match="closed"):
        wake(print, "never")


def test_a_loop_without_a_self_pipe_falls_back() -> None:
    class OtherLoop:  # uvloop and others keep their wake-up elsewhere
        def call_soon_threadsafe(self, *args: object) -> None:
            pass

    other = OtherLoop()
    assert wake_holding_gil(other) is None  # type: ignore[arg-type]
    bridge = LoopBridge(other, print)  # type: ignore[arg-type]
    assert bridge._call_soon == other.call_soon_threadsafe


async def test_wait_written_returns_once_the_woken_streams_have_taken_their_pieces() -> None:
    loop = asyncio.get_running_loop()
    bridge = LoopBridge(loop, lambda r: None)
    requests = [Request(model="m", prompt_tokens=[1], params=SamplingParams()) for _ in range(4)]
    taken: list[object] = []

    async def writer(request: Request) -> None:  # a stream's response task: take, write
        assert request.stream is not None
        piece = await request.stream.get()
        time.sleep(0.02)  # writing it to the socket, without giving the loop back
        taken.append(piece)

    for request in requests:
        request.stream = asyncio.Queue()
    writers = [asyncio.create_task(writer(r)) for r in requests]
    await asyncio.sleep(0)  # each writer now waits on its queue, as a streaming response does
    seen: list[object] = []

    def executor() -> None:
        bridge.publish([Update(r, f"piece {r.id}", is_done=False) for r in requests])
        seen.append(bridge.wait_written(5.0))
        seen.append(len(taken))  # read on this thread, right when the wait returned

    thread = threading.Thread(target=executor)
    thread.start()
    await asyncio.wait_for(asyncio.gather(*writers), 5)
    await asyncio.to_thread(thread.join)
    assert seen == [True, len(requests)]


async def test_wait_written_gives_up_after_its_timeout_when_the_loop_is_busy() -> None:
    loop = asyncio.get_running_loop()
    bridge = LoopBridge(loop, lambda r: None)
    request = Request(model="m", prompt_tokens=[1], params=SamplingParams())
    request.stream = asyncio.Queue()
    outcome: list[bool] = []

    def executor() -> None:
        bridge.publish([Update(request, "piece", is_done=False)])
        outcome.append(bridge.wait_written(0.05))

    thread = threading.Thread(target=executor)
    thread.start()
    time.sleep(0.5)  # the loop is stuck in something else the whole time
    await asyncio.to_thread(thread.join)
    assert outcome == [False]
    assert await asyncio.to_thread(bridge.wait_written, 5.0)  # the loop ran: it is written
