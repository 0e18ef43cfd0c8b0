"""Pick the task store the settings name."""

from __future__ import annotations

from pathlib import Path

from server.server_settings import ServerSettings
from server.tasks.redis_store import RedisTaskStore
from server.tasks.sqlite_store import SqliteTaskStore
from server.tasks.store import TaskStore


def open_task_store(settings: ServerSettings) -> TaskStore:
    max_tasks, max_age_s = settings.max_tasks, settings.task_max_age_hours * 3600
    if settings.task_store == "sqlite":
        path = Path(settings.data_dir) / "tasks.sqlite3"
        return SqliteTaskStore(
            path,
            max_tasks=max_tasks,
            max_age_s=max_age_s,
            max_attempts=settings.task_max_attempts,
        )
    return RedisTaskStore(
        settings.task_store,
        max_tasks=max_tasks,
        max_age_s=max_age_s,
        max_attempts=settings.task_max_attempts,
    )
