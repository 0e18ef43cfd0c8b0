"""Background tasks of the prototype API: a request whose result is polled.

A task is a thin record around a ``Request`` submitted to the same batcher as
every other request; its status is derived from the request, never stored
twice. The store keeps the newest ``max_tasks`` records in memory.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass, field
from enum import StrEnum
from itertools import islice
from typing import Any

from batching.request import Request, RequestStatus


class TaskStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"


_STATUS = {
    RequestStatus.WAITING: TaskStatus.QUEUED,
    RequestStatus.RUNNING: TaskStatus.RUNNING,
    RequestStatus.FINISHED: TaskStatus.DONE,
    RequestStatus.FAILED: TaskStatus.FAILED,
    RequestStatus.CANCELLED: TaskStatus.CANCELLED,
}


@dataclass(slots=True, eq=False)
class Task:
    request: Request
    result: dict[str, Any] | None = None  # set once the request is done
    created_at: float = field(default_factory=time.time)

    @property
    def id(self) -> str:
        return self.request.id

    @property
    def status(self) -> TaskStatus:
        # The request may be finished in the executor before the loop has seen
        # it; report "done" only once the result is in place.
        status = _STATUS[self.request.status]
        return TaskStatus.RUNNING if status is TaskStatus.DONE and self.result is None else status

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "task_id": self.id,
            "status": self.status.value,
            "model": self.request.model,
            "created_at": self.created_at,
        }
        if self.status is TaskStatus.DONE:
            out["result"] = self.result
        elif self.status is TaskStatus.FAILED:
            out["error"] = self.request.error
        return out


class TaskStore:
    def __init__(self, max_tasks: int = 10_000) -> None:
        self._tasks: OrderedDict[str, Task] = OrderedDict()
        self._max_tasks = max_tasks

    def add(self, task: Task) -> None:
        self._tasks[task.id] = task
        while len(self._tasks) > self._max_tasks:
            self._tasks.popitem(last=False)  # forget the oldest

    def get(self, task_id: str) -> Task | None:
        return self._tasks.get(task_id)

    def __len__(self) -> int:
        return len(self._tasks)

    def newest_first(self, offset: int, limit: int) -> list[Task]:
        return list(islice(reversed(self._tasks.values()), offset, offset + limit))
