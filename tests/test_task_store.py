"""The SQLite task store itself: expiry never drops a task whose result is still owed."""

from __future__ import annotations

import time
from pathlib import Path

from batching.request import FinishReason, Request, RequestStatus, SamplingParams
from server.tasks.store import Task, TaskStore


def new_task(created_at: float) -> Task:
    request = Request(model="m", prompt_tokens=[1], params=SamplingParams())
    return Task(request, {"prompt": "p"}, created_at=created_at)


async def test_expiry_by_count_and_age_keeps_queued_and_running(tmp_path: Path) -> None:
    store = TaskStore(tmp_path / "t.sqlite3", max_tasks=2, max_age_s=3600)
    now = time.time()
    old_running = new_task(now - 7200)  # past the age limit, still running
    old_running.request.status = RequestStatus.RUNNING
    queued = [new_task(now - 100 + i) for i in range(3)]  # the oldest of the five
    done = [new_task(now + i) for i in range(2)]
    finished_old = new_task(now - 7200)
    for task in [old_running, finished_old, *queued, *done]:
        await store.add(task)
    for task in [*done, finished_old]:
        task.request.mark_done(FinishReason.STOP)
        task.result = {"text": "x"}
        store.finish(task)
    await store.expire()
    kept = {r["task_id"] for r in await store.newest_first(0, 100)}
    owed = {old_running.id, *(t.id for t in queued)}
    assert owed <= kept  # before the fix, count expiry deleted these (polls then got 404)
    assert finished_old.id not in kept  # finished and past the age limit
    assert await store.count() == len(kept)
    store.close()


async def test_a_read_after_a_finish_sees_it(tmp_path: Path) -> None:
    store = TaskStore(tmp_path / "t.sqlite3", max_tasks=10, max_age_s=3600)
    task = new_task(time.time())
    await store.add(task)
    task.request.mark_done(FinishReason.CANCELLED)
    store.finish(task)  # queued on the store thread, not awaited
    record = await store.get(task.id)
    assert record is not None and record["status"] == "cancelled"
    store.close()
