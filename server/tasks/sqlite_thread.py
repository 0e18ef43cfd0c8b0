"""One SQLite database under ``data_dir``, driven from one thread of its own.

The stores of work that outlives a request (uploaded files, batches, stored
responses) keep their records this way, as the task store does: WAL mode, so
a ``kill -9`` loses nothing committed; every statement on the one thread, in
the order the loop issued it, so a read issued after a write sees it; nothing
blocking on the event loop (an fsync on an SD card can take hundreds of ms).
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


class SqliteThread:
    def __init__(self, path: Path, schema: str) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")  # WAL: durable across process crashes
        self.db.executescript(schema)
        self._thread = ThreadPoolExecutor(1, thread_name_prefix=f"store-{path.stem}")

    async def call(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._thread, fn, *args)

    async def execute(self, sql: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        """One statement; its rows (none for a write)."""
        return await self.call(lambda: self.db.execute(sql, args).fetchall())

    def close(self) -> None:
        self._thread.shutdown(wait=True)  # writes already issued land first
        self.db.close()
