"""An event loop whose clock jumps to the next timer whenever nothing else is ready.

For unit tests of code timed by the loop alone (``loop.time()``, ``asyncio.sleep``,
``wait_for``): each sleep and timeout happens in the order the code asks, however busy
or fast the machine, and a test of 40 ms margins takes no wall-clock time and cannot
be pushed past them by a stall of the box. Real I/O (the loop's self-pipe, used by
threads) still wakes it; with no timer due, it waits for that as a normal loop does.
"""

from __future__ import annotations

import asyncio
import selectors
from collections.abc import Callable, Coroutine
from typing import Any


class _JumpingSelector:
    """The loop's selector, polled without waiting; a wait for a timer becomes a jump."""

    def __init__(self, real: selectors.BaseSelector, loop: VirtualClockLoop) -> None:
        self._real = real
        self._loop = loop

    def select(self, timeout: float | None = None) -> list[Any]:
        if timeout is None:  # no timer: wait for real I/O
            return self._real.select(None)
        events = self._real.select(0)
        if not events and timeout > 0:
            self._loop.now += timeout
        return events

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


class VirtualClockLoop(asyncio.SelectorEventLoop):
    def __init__(self) -> None:
        super().__init__()
        self.now = 0.0
        self._selector = _JumpingSelector(self._selector, self)  # type: ignore[has-type,arg-type]

    def time(self) -> float:
        return self.now


def on_virtual_clock(test: Callable[[], Coroutine[Any, Any, None]]) -> Callable[[], None]:
    """The async test run to its end on a loop of its own with a virtual clock (a plain
    test function to pytest, so pytest-asyncio leaves it alone)."""

    def run() -> None:
        loop = VirtualClockLoop()
        try:
            loop.run_until_complete(test())
        finally:
            loop.close()

    run.__name__, run.__doc__ = test.__name__, test.__doc__
    return run
