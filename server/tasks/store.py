"""Background tasks of the prototype API, kept in SQLite so they survive restarts.

A task is a ``Request`` submitted to the same batcher as every other request.
While the process runs, its status is read live from the request (queued,
running); the database row is written when the task is created and when it
ends (done, failed, cancelled). WAL mode with one writer, the store's own thread:
a ``kill -9`` loses nothing that was committed.

Restart rule: a task that was queued or running when the process died is
marked ``failed`` with the reason on start-up, not run again: a task that
took the server down must not take it down again in a loop, and the client
still has the request in the record to resend. Records expire by age and count.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, TypeVar

import orjson

from batching.faults import FAULTS
from batching.request import Request, RequestStatus

T = TypeVar("T")


class TaskStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def is_final(self) -> bool:
        return self in (TaskStatus.DONE, TaskStatus.FAILED, TaskStatus.CANCELLED)


_STATUS = {
    RequestStatus.WAITING: TaskStatus.QUEUED,
    RequestStatus.RUNNING: TaskStatus.RUNNING,
    RequestStatus.FINISHED: TaskStatus.DONE,
    RequestStatus.FAILED: TaskStatus.FAILED,
    RequestStatus.CANCELLED: TaskStatus.CANCELLED,
}
RESTART_REASON = "the server stopped before this task finished; send the request again"
SHUTDOWN_REASON = "the server shut down before this task finished; send the request again"
SCHEMA = """
CREATE TABLE IF NOT EXISTS tasks (
    id TEXT PRIMARY KEY,
    request_id TEXT,
    model TEXT NOT NULL,
    status TEXT NOT NULL,
    request TEXT NOT NULL,
    result TEXT,
    error TEXT,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS tasks_by_age ON tasks (created_at);
"""


@dataclass(slots=True, eq=False)
class Task:
    request: Request
    body: dict[str, Any]  # the request as the client sent it
    request_id: str | None = None
    result: dict[str, Any] | None = None  # set once the request is done
    created_at: float = field(default_factory=time.time)

    @property
    def id(self) -> str:
        return self.request.id

    @property
    def status(self) -> TaskStatus:
        # The executor may have finished the request before the loop recorded
        # its result; report "done" only once the result is in place.
        status = _STATUS[self.request.status]
        return TaskStatus.RUNNING if status is TaskStatus.DONE and self.result is None else status


class TaskStore:
    """Task records in SQLite, written and read on one thread of its own.

    SQLite calls block (an fsync on an SD card can take hundreds of ms), so
    none runs on the event loop: every statement goes to a single store
    thread, in the order the loop issued them. A write issued before a read
    (a task finishing, then a poll) is therefore always seen by the read.
    ``_live`` (tasks in flight) is touched by the loop only.
    """

    def __init__(self, path: Path, *, max_tasks: int, max_age_s: float) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")  # WAL: durable across process crashes
        self._db.executescript(SCHEMA)
        self._max_tasks = max_tasks
        self._max_age_s = max_age_s
        self._live: dict[str, Task] = {}
        self._num_added = 0
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="task-store")
        self._fail_unfinished(RESTART_REASON)
        self._expire()

    async def _call(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._thread, fn, *args)

    async def add(self, task: Task) -> None:
        self._live[task.id] = task
        row = (
            task.id,
            task.request_id,
            task.request.model,
            TaskStatus.QUEUED.value,
            orjson.dumps(task.body).decode(),
            task.created_at,
            task.created_at,
        )
        self._num_added += 1
        await self._call(self._insert, row, self._num_added % 100 == 0)

    def finish(self, task: Task) -> None:
        """The request is done: stop tracking it live; its final state is written in order."""
        result = orjson.dumps(task.result).decode() if task.result is not None else None
        row = (task.status.value, result, task.request.error, time.time(), task.id)
        self._live.pop(task.id, None)
        self._thread.submit(self._update, row)

    def live(self, task_id: str) -> Task | None:
        return self._live.get(task_id)

    async def get(self, task_id: str) -> dict[str, Any] | None:
        rows = await self._call(self._select, "WHERE id = ?", (task_id,))
        return self._record(rows[0]) if rows else None

    async def newest_first(self, offset: int, limit: int) -> list[dict[str, Any]]:
        where = "ORDER BY created_at DESC, rowid DESC LIMIT ? OFFSET ?"
        rows = await self._call(self._select, where, (limit, offset))
        return [self._record(row) for row in rows]

    async def count(self) -> int:
        return await self._call(self._count)

    async def expire(self) -> None:
        await self._call(self._expire)

    def close(self) -> None:
        """Shutting down: tasks still in flight will not finish; say so, then close."""
        self._thread.shutdown(wait=True)  # writes already issued land first
        self._fail_unfinished(SHUTDOWN_REASON)
        self._db.close()

    # -- on the store thread ------------------------------------------------------

    def _insert(self, row: tuple[Any, ...], expire: bool) -> None:
        FAULTS.delay("store_delay")
        self._db.execute("INSERT INTO tasks VALUES (?, ?, ?, ?, ?, NULL, NULL, ?, ?)", row)
        if expire:
            self._expire()

    def _update(self, row: tuple[Any, ...]) -> None:
        FAULTS.delay("store_delay")
        self._db.execute(
            "UPDATE tasks SET status = ?, result = ?, error = ?, updated_at = ? WHERE id = ?", row
        )

    def _count(self) -> int:
        FAULTS.delay("store_delay")
        count: int = self._db.execute("SELECT COUNT(*) FROM tasks").fetchone()[0]
        return count

    def _expire(self) -> None:
        """Drop finished records past the age limit, then the oldest finished ones past the
        count limit. Queued and running records are never dropped: their results are owed."""
        FAULTS.delay("store_delay")
        final = "status IN ('done', 'failed', 'cancelled')"
        cutoff = time.time() - self._max_age_s
        self._db.execute(f"DELETE FROM tasks WHERE {final} AND created_at < ?", (cutoff,))
        self._db.execute(
            f"DELETE FROM tasks WHERE {final} AND id NOT IN "
            "(SELECT id FROM tasks ORDER BY created_at DESC, rowid DESC LIMIT ?)",
            (self._max_tasks,),
        )

    def _fail_unfinished(self, reason: str) -> None:
        self._db.execute(
            "UPDATE tasks SET status = 'failed', error = ?, updated_at = ? "
            "WHERE status IN ('queued', 'running')",
            (reason, time.time()),
        )

    def _select(self, where: str, args: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        FAULTS.delay("store_delay")
        cursor = self._db.execute(
            "SELECT id, request_id, model, status, request, result, error, created_at, "
            f"updated_at FROM tasks {where}",
            args,
        )
        return cursor.fetchall()

    # -- on the loop ----------------------------------------------------------------

    def _record(self, row: tuple[Any, ...]) -> dict[str, Any]:
        task_id, request_id, model, status, request, result, error, created, updated = row
        live = self._live.get(task_id)
        if live is not None:  # in flight: the request object knows better than the row
            status = live.status.value
        record: dict[str, Any] = {
            "task_id": task_id,
            "request_id": request_id,
            "status": status,
            "model": model,
            "created_at": created,
            "updated_at": updated,
            "request": orjson.loads(request),
        }
        if status == TaskStatus.DONE and result is not None:
            record["result"] = orjson.loads(result)
        if status in (TaskStatus.FAILED, TaskStatus.CANCELLED) and error:
            record["error"] = error
        return record
