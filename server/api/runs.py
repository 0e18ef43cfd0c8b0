"""Work that runs in the background by id (a batch, a background response): one asyncio
task each, cancelled on a client's request or all at once when the server stops.

A run tells the two apart when it is cancelled (``is_cancel_asked``): asked by a
client, it ends ``cancelled``; stopped by a shutdown, it stays unfinished in its
store and runs again on the next start.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Coroutine
from typing import Any


class Runs:
    def __init__(self) -> None:
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._cancel_asked: set[str] = set()

    def start(self, key: str, run: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(run, name=key)
        self._tasks[key] = task
        task.add_done_callback(lambda _: self._tasks.pop(key, None))

    def is_running(self, key: str) -> bool:
        return key in self._tasks

    async def cancel(self, key: str) -> None:
        """Cancel a run for a client, and wait until it has ended."""
        task = self._tasks.get(key)
        if task is None:
            return
        self._cancel_asked.add(key)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.shield(task)

    def is_cancel_asked(self, key: str) -> bool:
        """In a run that was cancelled: was it a client's cancel (not a shutdown)?"""
        if key in self._cancel_asked:
            self._cancel_asked.discard(key)
            return True
        return False

    async def close(self) -> None:
        """The server stops: cancel every run; each stays unfinished in its store."""
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
