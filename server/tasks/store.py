"""Background tasks of the prototype API: the record a task leaves, and the store interface.

A task is a ``Request`` submitted to the same batcher as every other request.
While the process runs, its status is read live from the request (queued,
running); the stored record is written when the task is created and when it
ends (done, failed, cancelled). Two backends keep the records: SQLite (one
process, the default; ``sqlite_store``) and Redis (replicas sharing one store;
``redis_store``). Both keep the same rules:

Restart rule: an accepted task is an answered task. One that was queued or
running when its process died (``kill -9``, an out-of-memory kill, a crash in
llama.cpp) is run again when the server starts, with the same body, so a
greedy or seeded task gives the same text. ``attempts`` counts its runs and
``failures`` says why each earlier one was cut short; a task whose run cut
short is its ``task_max_attempts``-th fails with all the reasons, so a task
that takes the server down cannot take it down in a loop. Its result is
written once: a final record is never overwritten, and only the process that
owns a run writes its ending. Finished records expire by age and count; queued
and running ones never do (their results are owed).

Who runs an orphan again: with SQLite, the restarted process; with Redis, the
replica that first notices a dead replica's silence takes its unfinished tasks
over (``redis_store``). Either way they arrive on ``orphans``, which the app
drains for as long as it runs.
"""

from __future__ import annotations

import asyncio
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import orjson

from batching.request import Request, RequestStatus
from server.errors import ApiError


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
# printf-style, as the Redis backend fills them inside a Lua script too
DIED_REASON = "%s while this task was %s (run %d)"  # who died, status, attempt
SPENT_REASON = "failed after %d runs, each cut short: %s"  # attempts, the reasons joined by "; "
PROCESS_DIED = "the server process died"
SHUTDOWN_REASON = "the server shut down before this task finished; send the request again"
FINAL_STATUSES = ("done", "failed", "cancelled")


class TaskStoreUnavailable(ApiError):
    """The store cannot be reached (Redis down): task routes answer 503, generation goes on."""

    def __init__(self, detail: str) -> None:
        super().__init__(
            503,
            f"the task store is unreachable ({detail}); task routes are unavailable until it "
            "returns, /generate still serves; retry shortly",
            headers={"Retry-After": "2"},
        )


class TaskStoreFull(ApiError):
    """The store cannot write (its disk is full or read-only): a new task is refused, so
    that no task is accepted that was not recorded; generation goes on."""

    def __init__(self, detail: str) -> None:
        super().__init__(
            507,
            f"the task store cannot record a new task ({detail}); no task was accepted; free "
            "space in the server's data folder (data_dir) and retry. /generate still serves",
            headers={"Retry-After": "30"},
        )


@dataclass(slots=True, eq=False)
class Task:
    request: Request
    body: dict[str, Any]  # the request as the client sent it
    request_id: str | None = None
    result: dict[str, Any] | None = None  # set once the request is done
    created_at: float = field(default_factory=time.time)
    ended_at: float | None = None  # when its ending was handed to the store (its updated_at)

    @property
    def id(self) -> str:
        return self.request.id

    @property
    def status(self) -> TaskStatus:
        # The executor may have finished the request before the loop recorded
        # its result; report "done" only once the result is in place.
        status = _STATUS[self.request.status]
        return TaskStatus.RUNNING if status is TaskStatus.DONE and self.result is None else status


@dataclass(slots=True)
class StoredTask:
    """One record as a backend keeps it (JSON fields still encoded)."""

    task_id: str
    request_id: str | None
    model: str
    status: str
    request: str
    result: str | None
    error: str | None
    created_at: float
    updated_at: float
    replica: str | None = None  # the replica that runs it (Redis backend only)
    attempts: int = 1  # runs begun (SQLite backend: a task whose process died runs again)
    failures: str | None = None  # JSON list: why each earlier run was cut short


@dataclass(slots=True)
class Orphan:
    """A task whose process died before it finished, to run again (same id, same body)."""

    task_id: str
    request_id: str | None
    body: dict[str, Any]
    created_at: float


class TaskStore(ABC):
    """Where task records live. ``_live`` (tasks this process runs) is touched by the loop only.

    Reads issued after a write on the same process see that write (a task
    finishing, then a poll), whatever the backend.
    """

    backend: str = ""
    replica: str | None = None  # this process's id among replicas sharing the store

    def __init__(self) -> None:
        self._live: dict[str, Task] = {}
        # tasks to run again: filled at start-up (SQLite) or when a replica dies (Redis)
        self.orphans: asyncio.Queue[Orphan] = asyncio.Queue()

    async def start(self) -> None:
        """Begin background work once the event loop runs (none by default)."""
        return None

    @abstractmethod
    async def add(self, task: Task) -> None:
        """Record a new task; it is tracked live until ``finish``."""

    @abstractmethod
    def finish(self, task: Task) -> None:
        """The request is done: stop tracking it live; its final state is written in order."""

    @abstractmethod
    async def get(self, task_id: str) -> dict[str, Any] | None: ...

    @abstractmethod
    async def newest_first(self, offset: int, limit: int) -> list[dict[str, Any]]: ...

    @abstractmethod
    async def count(self) -> int: ...

    @abstractmethod
    async def expire(self) -> None:
        """Drop finished records past the age limit, then the oldest past the count limit."""

    @abstractmethod
    async def close(self) -> None:
        """Shutting down: tasks still in flight will not finish; say so, then close."""

    async def request_cancel(self, record: dict[str, Any]) -> bool:
        """Ask the process that runs an unfinished task to cancel it; False: none can."""
        return False

    def take_orphans(self) -> list[Orphan]:
        """The tasks waiting to run again now (each handed out once)."""
        taken = []
        while not self.orphans.empty():
            taken.append(self.orphans.get_nowait())
        return taken

    async def fail_orphan(self, orphan: Orphan, reason: str) -> None:
        """An orphan that cannot be run again ends failed with ``reason``."""
        return None

    async def readd(self, task: Task) -> None:
        """Track a task run again under its old record (``add`` without a new row)."""
        self._live[task.id] = task

    def live(self, task_id: str) -> Task | None:
        return self._live.get(task_id)

    def describe(self) -> dict[str, Any]:
        """For /health_check."""
        return {"backend": self.backend}

    def _record(self, row: StoredTask) -> dict[str, Any]:
        status, result, error = row.status, row.result, row.error
        updated_at = row.updated_at
        live = self._live.get(row.task_id)
        if live is not None:  # in flight here (or its ending not yet written, the disk
            # full): the request object knows better than the row
            status = live.status.value
            if live.result is not None and result is None:
                result = orjson.dumps(live.result).decode()
            error = error or live.request.error
            if live.ended_at is not None:  # the time the row gets with the ending
                updated_at = live.ended_at
        record: dict[str, Any] = {
            "task_id": row.task_id,
            "request_id": row.request_id,
            "status": status,
            "model": row.model,
            "created_at": row.created_at,
            "updated_at": updated_at,
            "request": orjson.loads(row.request),
        }
        if row.replica is not None:
            record["replica"] = row.replica
        record["attempts"] = row.attempts
        if row.failures:
            record["failures"] = orjson.loads(row.failures)
        if status == TaskStatus.DONE and result is not None:
            record["result"] = orjson.loads(result)
        if status in (TaskStatus.FAILED, TaskStatus.CANCELLED) and error:
            record["error"] = error
        return record
