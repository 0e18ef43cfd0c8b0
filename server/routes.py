"""The prototype's JSON API: health, generate, and background tasks."""

from __future__ import annotations

from typing import Any, TypeVar

import orjson
from starlette.requests import Request as HttpRequest
from starlette.responses import Response
from starlette.routing import Route

from batching.request import RequestStatus
from server.errors import ApiError
from server.generation import generate, prepare, result_body, submit
from server.registry import ModelRegistry
from server.schema import parse
from server.schemas import GenerateBody
from server.tasks import Task, TaskStore

T = TypeVar("T")
MAX_PER_PAGE = 100


def json_response(body: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(body), status, media_type="application/json")


async def read_body(http: HttpRequest, schema: type[T]) -> T:
    raw = await http.body()
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ApiError(
            400, f"the request body is not valid JSON ({exc}); send a JSON object"
        ) from None
    try:
        return parse(schema, data)
    except ValueError as exc:
        raise ApiError(400, str(exc)) from None


def registry_of(http: HttpRequest) -> ModelRegistry:
    registry: ModelRegistry = http.app.state.registry
    return registry


def tasks_of(http: HttpRequest) -> TaskStore:
    tasks: TaskStore = http.app.state.tasks
    return tasks


async def index(http: HttpRequest) -> Response:
    return json_response(
        {
            "name": "edge-llm-server",
            "endpoints": [
                "/health_check",
                "/generate",
                "/send_text",
                "/get_task_status/{task_id}",
                "/poll_task_status/{task_id}",
                "/tasks/",
            ],
        }
    )


async def health_check(http: HttpRequest) -> Response:
    registry = registry_of(http)
    models: dict[str, Any] = {}
    for name in registry.config.models:
        loaded = registry.loaded.get(name)
        models[name] = {"loaded": True, **loaded.describe()} if loaded else {"loaded": False}
    return json_response(
        {
            "status": "ok",
            "default_model": registry.config.server.default_model,
            "loaded_models": list(registry.loaded),
            "running": sum(m.batcher.num_running for m in registry.loaded.values()),
            "waiting": sum(m.batcher.num_waiting for m in registry.loaded.values()),
            "tasks": len(tasks_of(http)),
            "models": models,
        }
    )


async def generate_route(http: HttpRequest) -> Response:
    body = await read_body(http, GenerateBody)
    request = await generate(registry_of(http), body)
    return json_response(result_body(request))


async def send_text(http: HttpRequest) -> Response:
    body = await read_body(http, GenerateBody)
    loaded, request = await prepare(registry_of(http), body)
    submit(loaded, request)
    task = Task(request)
    request.done.add_done_callback(lambda _: _record_result(task))
    tasks_of(http).add(task)
    return json_response({"task_id": task.id, "status": task.status.value}, status=202)


def _record_result(task: Task) -> None:
    if task.request.status is RequestStatus.FINISHED:
        task.result = result_body(task.request)


async def task_status(http: HttpRequest) -> Response:
    task_id = http.path_params["task_id"]
    task = tasks_of(http).get(task_id)
    if task is None:
        raise ApiError(
            404, f"no task {task_id!r}; task ids come from POST /send_text (see /tasks/)"
        )
    return json_response(task.as_dict())


async def list_tasks(http: HttpRequest) -> Response:
    page = _query_int(http, "page", 1, 1, 1_000_000)
    per_page = _query_int(http, "per_page", 20, 1, MAX_PER_PAGE)
    store = tasks_of(http)
    tasks = store.newest_first((page - 1) * per_page, per_page)
    return json_response(
        {
            "tasks": [t.as_dict() for t in tasks],
            "page": page,
            "per_page": per_page,
            "total": len(store),
        }
    )


def _query_int(http: HttpRequest, name: str, default: int, low: int, high: int) -> int:
    raw = http.query_params.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ApiError(400, f"query parameter {name} must be an integer, got {raw!r}") from None
    if not low <= value <= high:
        raise ApiError(400, f"query parameter {name} must be between {low} and {high}, got {value}")
    return value


ROUTES = [
    Route("/", index, methods=["GET"]),
    Route("/health_check", health_check, methods=["GET"]),
    Route("/generate", generate_route, methods=["POST"]),
    Route("/send_text", send_text, methods=["POST"]),
    Route("/get_task_status/{task_id}", task_status, methods=["GET"]),
    Route("/poll_task_status/{task_id}", task_status, methods=["GET"]),
    Route("/tasks/", list_tasks, methods=["GET"]),
    Route("/tasks", list_tasks, methods=["GET"]),
]
