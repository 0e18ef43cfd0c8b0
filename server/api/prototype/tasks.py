"""The prototype's task API: send now, poll later; cancel; list."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from typing import Any

from starlette.requests import Request as HttpRequest
from starlette.responses import Response

from batching.request import RequestStatus
from server.api.http import json_response, query_int, read_body, result_cache_for
from server.api.prototype.routes import prepare_body, prepare_generate, result_fields, tasks_of
from server.api.prototype.schemas import GenerateBody
from server.errors import ApiError
from server.models.registry import ModelRegistry
from server.schema import parse
from server.serving.run import submit
from server.tasks.store import Orphan, Task, TaskStatus, TaskStore

log = logging.getLogger("server.api.task_routes")  # the name its log lines had before the move

MAX_PER_PAGE = 100
CANCEL_WAIT_S = 5.0


async def send_text(http: HttpRequest) -> Response:
    """Start a generation task; poll /get_task_status/{task_id} for the result."""
    body = await read_body(http, GenerateBody)
    if body.stream:
        raise ApiError(400, "stream: tasks are polled, not streamed; use /generate to stream")
    loaded, request = await prepare_body(http, body)
    store = tasks_of(http)
    task = Task(request, dataclasses.asdict(body), request_id=http.state.request_id)
    await store.add(task)  # first: with the store unreachable, nothing runs unrecorded
    request.done.add_done_callback(lambda _: _record_end(store, task))
    submit(loaded, request, cache=result_cache_for(http, body))
    return json_response({"task_id": task.id, "status": task.status.value}, status=202)


async def rerun_orphans(registry: ModelRegistry, store: TaskStore) -> None:
    """For as long as the server runs: run again the tasks a dead process left unfinished
    (``server.tasks.store``): at start-up, and with Redis whenever a replica dies.

    The stored body is the one the client sent, so a greedy or seeded task gives the
    same text as its first run would have. No result cache: the run is owed in full.
    """
    while True:
        orphan = await store.orphans.get()
        try:
            await _rerun(registry, store, orphan)
        except Exception as exc:  # e.g. its model left config.json: that task fails alone
            log.warning("task %s cannot run again: %s", orphan.task_id, exc)
            await store.fail_orphan(orphan, f"cannot run this task again: {exc}")


async def _rerun(registry: ModelRegistry, store: TaskStore, orphan: Orphan) -> None:
    body = parse(GenerateBody, orphan.body, ignored=[])  # a field a later version dropped
    loaded, request = await prepare_generate(registry, body)
    request.id = orphan.task_id  # the task keeps its id: clients poll that one
    task = Task(request, orphan.body, request_id=orphan.request_id, created_at=orphan.created_at)
    await store.readd(task)
    request.done.add_done_callback(lambda _: _record_end(store, task))
    submit(loaded, request, cache=None)


def _record_end(store: TaskStore, task: Task) -> None:
    if task.request.status is RequestStatus.FINISHED:
        task.result = result_fields(task.request)
    store.finish(task)


async def task_status(http: HttpRequest) -> Response:
    """A task's status, with its result when done or its error when failed."""
    return json_response(await _record_or_404(tasks_of(http), http.path_params["task_id"]))


async def cancel_task(http: HttpRequest) -> Response:
    """Cancel a queued or running task; answers with the task's final record."""
    store = tasks_of(http)
    task_id = http.path_params["task_id"]
    record = await _record_or_404(store, task_id)
    task = store.live(task_id)
    is_final = TaskStatus(record["status"]).is_final
    if task is not None and not is_final:
        # a queued task ends at once; a running one when the executor frees its sequence
        task.request.cancel()
        await asyncio.wait({task.request.done}, timeout=CANCEL_WAIT_S)
    elif is_final or not await store.request_cancel(record):
        raise ApiError(
            409, f"task {task_id!r} already ended ({record['status']}); nothing to cancel"
        )
    else:  # another replica runs it: it takes the request at its next heartbeat
        deadline = time.monotonic() + CANCEL_WAIT_S
        while time.monotonic() < deadline:
            await asyncio.sleep(0.1)
            if TaskStatus((await _record_or_404(store, task_id))["status"]).is_final:
                break
    return json_response(await _record_or_404(store, task_id))


async def _record_or_404(store: TaskStore, task_id: str) -> dict[str, Any]:
    record = await store.get(task_id)
    if record is None:
        raise ApiError(
            404, f"no task {task_id!r}; task ids come from POST /send_text (see /tasks/)"
        )
    return record


async def list_tasks(http: HttpRequest) -> Response:
    """Tasks, newest first, a page at a time."""
    page = query_int(http, "page", 1, 1, 1_000_000)
    per_page = query_int(http, "per_page", 20, 1, MAX_PER_PAGE)
    store = tasks_of(http)
    records = await store.newest_first((page - 1) * per_page, per_page)
    total = await store.count()
    return json_response({"tasks": records, "page": page, "per_page": per_page, "total": total})
