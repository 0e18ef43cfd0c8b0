"""The default task store: SQLite in WAL mode under ``data_dir``, one process.

The row is written when the task is created and when it ends. WAL mode with
one writer, the store's own thread: a ``kill -9`` loses nothing that was
committed. On a full or read-only disk a new task is refused (507, nothing
accepted unrecorded); an accepted task's ending that cannot be written is kept
in memory, served from there, and written once the disk takes it again (every
store call tries first); if the process dies before, the row is still
unfinished and the task runs again on restart, as after a crash.

On start-up every queued or running row is from a process that died, so the
restart rule (``server.tasks.store``) queues them to run again, or fails those
whose attempts are spent. A final row is never updated again.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import orjson

from batching.faults import FAULTS
from server.tasks.store import (
    DIED_REASON,
    PROCESS_DIED,
    SHUTDOWN_REASON,
    SPENT_REASON,
    Orphan,
    StoredTask,
    Task,
    TaskStatus,
    TaskStore,
    TaskStoreFull,
)

log = logging.getLogger(__name__)

T = TypeVar("T")
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
    updated_at REAL NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 1,
    failures TEXT
);
CREATE INDEX IF NOT EXISTS tasks_by_age ON tasks (created_at);
"""
ADDED_COLUMNS = {"attempts": "INTEGER NOT NULL DEFAULT 1", "failures": "TEXT"}
COLUMNS = "id, request_id, model, status, request, result, error, created_at, updated_at"
UNFINISHED = "status IN ('queued', 'running')"


class SqliteTaskStore(TaskStore):
    """Task records in SQLite, written and read on one thread of its own.

    SQLite calls block (an fsync on an SD card can take hundreds of ms), so
    none runs on the event loop: every statement goes to a single store
    thread, in the order the loop issued them. A write issued before a read
    (a task finishing, then a poll) is therefore always seen by the read.
    """

    backend = "sqlite"

    def __init__(
        self, path: Path, *, max_tasks: int, max_age_s: float, max_attempts: int = 3
    ) -> None:
        super().__init__()
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")  # WAL: durable across process crashes
        self._db.executescript(SCHEMA)
        have = {row[1] for row in self._db.execute("PRAGMA table_info(tasks)")}
        for name, kind in ADDED_COLUMNS.items():  # a database made before the columns were
            if name not in have:
                self._db.execute(f"ALTER TABLE tasks ADD COLUMN {name} {kind}")
        self._max_tasks = max_tasks
        self._max_attempts = max_attempts
        self._max_age_s = max_age_s
        self._num_added = 0
        # endings not written yet (a full disk), by task id; store thread only
        self._unwritten: dict[str, tuple[Any, ...]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="task-store")
        for orphan in self._requeue_unfinished():
            self.orphans.put_nowait(orphan)
        self._expire()

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()

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
        try:
            await self._call(self._insert, row, self._num_added % 100 == 0)
        except sqlite3.OperationalError as exc:  # full, read-only, I/O error: not accepted
            self._live.pop(task.id, None)
            raise TaskStoreFull(str(exc)) from None

    def finish(self, task: Task) -> None:
        """Write the task's ending; it stays live (answered from memory) until written."""
        result = orjson.dumps(task.result).decode() if task.result is not None else None
        task.ended_at = time.time()  # read from the row or from the task, the same time
        row = (task.status.value, result, task.request.error, task.ended_at, task.id)
        self._thread.submit(self._update, row)

    async def fail_orphan(self, orphan: Orphan, reason: str) -> None:
        row = ("failed", None, reason, time.time(), orphan.task_id)
        await self._call(self._update, row)

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

    async def close(self) -> None:
        self._thread.shutdown(wait=True)  # writes already issued land first
        self._flush()
        try:
            self._fail_unfinished(SHUTDOWN_REASON)
        except sqlite3.OperationalError as exc:  # they stay unfinished: run again on restart
            log.error("task store: cannot mark unfinished tasks failed at shutdown: %s", exc)
        if self._unwritten:
            log.error(
                "task store: %d tasks' endings could not be written; they run again on restart",
                len(self._unwritten),
            )
        self._db.close()

    # -- on the store thread ------------------------------------------------------

    def _insert(self, row: tuple[Any, ...], expire: bool) -> None:
        FAULTS.delay("store_delay")
        self._flush()
        self._db.execute(
            f"INSERT INTO tasks ({COLUMNS}) VALUES (?, ?, ?, ?, ?, NULL, NULL, ?, ?)", row
        )
        if expire:
            try:
                self._expire()
            except sqlite3.OperationalError as exc:  # the task is recorded; expire later
                log.warning("task store: cannot expire old tasks now: %s", exc)

    def _update(self, row: tuple[Any, ...]) -> None:
        FAULTS.delay("store_delay")
        self._unwritten[row[-1]] = row
        self._flush()

    def _flush(self) -> None:
        """Write the endings not written yet, oldest first; stop at the first refusal (the
        disk still full) and keep the rest for the next store call."""
        landed: list[str] = []
        for task_id, row in list(self._unwritten.items()):
            try:  # written once: a row already final (a cancel, a shutdown) keeps its ending
                self._db.execute(
                    "UPDATE tasks SET status = ?, result = ?, error = ?, updated_at = ? "
                    f"WHERE id = ? AND {UNFINISHED}",
                    row,
                )
            except sqlite3.OperationalError as exc:
                if not landed:
                    log.warning(
                        "task store: %d tasks' endings not written yet (%s); kept in memory "
                        "and written when the disk takes them",
                        len(self._unwritten),
                        exc,
                    )
                break
            del self._unwritten[task_id]
            landed.append(task_id)
        if landed and self._loop is not None:
            self._loop.call_soon_threadsafe(self._forget, landed)

    def _forget(self, task_ids: list[str]) -> None:
        """On the loop: tasks whose endings are written are read from the database now."""
        for task_id in task_ids:
            task = self._live.get(task_id)
            if task is not None and task.status.is_final:
                del self._live[task_id]

    def _count(self) -> int:
        FAULTS.delay("store_delay")
        self._flush()
        count: int = self._db.execute("SELECT COUNT(*) FROM tasks").fetchone()[0]
        return count

    def _expire(self) -> None:
        FAULTS.delay("store_delay")
        self._flush()
        final = "status IN ('done', 'failed', 'cancelled')"
        cutoff = time.time() - self._max_age_s
        self._db.execute(f"DELETE FROM tasks WHERE {final} AND created_at < ?", (cutoff,))
        self._db.execute(
            f"DELETE FROM tasks WHERE {final} AND id NOT IN "
            "(SELECT id FROM tasks ORDER BY created_at DESC, rowid DESC LIMIT ?)",
            (self._max_tasks,),
        )

    def _requeue_unfinished(self) -> list[Orphan]:
        """Start-up: every unfinished row's process died. Run it again, or fail it with every
        reason once its attempts are spent."""
        rows = self._db.execute(
            f"SELECT id, request_id, status, request, created_at, attempts, failures "
            f"FROM tasks WHERE {UNFINISHED} ORDER BY created_at, rowid"
        ).fetchall()
        orphans, now = [], time.time()
        for task_id, request_id, status, body, created_at, attempts, failures in rows:
            reasons = [*orjson.loads(failures or "[]")]
            reasons.append(DIED_REASON % (PROCESS_DIED, status, attempts))
            encoded = orjson.dumps(reasons).decode()
            if attempts >= self._max_attempts:
                error = SPENT_REASON % (attempts, "; ".join(reasons))
                self._db.execute(
                    "UPDATE tasks SET status = 'failed', error = ?, failures = ?, updated_at = ? "
                    "WHERE id = ?",
                    (error, encoded, now, task_id),
                )
                continue
            self._db.execute(
                "UPDATE tasks SET status = 'queued', attempts = ?, failures = ?, updated_at = ? "
                "WHERE id = ?",
                (attempts + 1, encoded, now, task_id),
            )
            orphans.append(Orphan(task_id, request_id, orjson.loads(body), created_at))
        return orphans

    def _fail_unfinished(self, reason: str) -> None:
        self._db.execute(
            f"UPDATE tasks SET status = 'failed', error = ?, updated_at = ? WHERE {UNFINISHED}",
            (reason, time.time()),
        )

    def _select(self, where: str, args: tuple[Any, ...]) -> list[StoredTask]:
        FAULTS.delay("store_delay")
        self._flush()
        cursor = self._db.execute(f"SELECT {COLUMNS}, attempts, failures FROM tasks {where}", args)
        return [_stored(*row) for row in cursor.fetchall()]


def _stored(*row: Any) -> StoredTask:
    task_id, request_id, model, status, request, result, error, created, updated = row[:9]
    return StoredTask(
        task_id,
        request_id,
        model,
        status,
        request,
        result,
        error,
        created,
        updated,
        attempts=row[9],
        failures=row[10],
    )
