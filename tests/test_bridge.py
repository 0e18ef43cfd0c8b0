"""The executor -> event loop crossing: a wake-up that keeps the GIL, and its fallback."""

from __future__ import annotations

import asyncio
import threading

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
