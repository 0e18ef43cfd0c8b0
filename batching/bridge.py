"""The one crossing from the executor thread back to the event loop.

The executor collects every update of a decode step and hands them over in a
single ``call_soon_threadsafe``, so the loop wakes once per step, not once per
token. Everything that touches asyncio objects runs in ``_apply`` on the loop.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass

from batching.request import Request


@dataclass(slots=True)
class Update:
    request: Request
    text: str  # new text for the stream (may be empty)
    is_done: bool


class LoopBridge:
    def __init__(self, loop: asyncio.AbstractEventLoop, on_done: Callable[[Request], None]) -> None:
        self._loop = loop
        self._on_done = on_done

    def publish(self, updates: list[Update]) -> None:
        """Executor thread: deliver one step's updates to the event loop."""
        if not updates:
            return
        # A closed loop means the process is shutting down: nobody is listening.
        with contextlib.suppress(RuntimeError):
            self._loop.call_soon_threadsafe(self._apply, updates)

    def _apply(self, updates: list[Update]) -> None:
        for update in updates:
            request = update.request
            if request.stream is not None and update.text:
                request.stream.put_nowait(update.text)
            if update.is_done:
                if request.stream is not None:
                    request.stream.put_nowait(None)
                if not request.done.done():
                    request.done.set_result(request)
                self._on_done(request)
