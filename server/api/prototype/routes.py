"""The prototype's JSON API: its page, health and /generate (tasks: ``tasks``)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

from starlette.requests import Request as HttpRequest
from starlette.responses import Response

from batching.request import Request, RequestStatus
from server.api.http import client_left, json_response, read_body, registry_of, result_cache_for
from server.api.pages import local_page
from server.api.prototype.schemas import GenerateBody
from server.api.sse import DONE, event, progress_frame, sse_response
from server.models.gpu import host_report
from server.models.loaded import LoadedModel
from server.models.registry import ModelRegistry
from server.serving.failures import check_failed, failure_error
from server.serving.prepare import prepare
from server.serving.run import speculation_counts, submit, usage, wait_done
from server.serving.streams import Progress, stream_events
from server.tasks.store import TaskStore, TaskStoreUnavailable
from speculative.prompt import Messages

MAX_PER_PAGE = 100


def tasks_of(http: HttpRequest) -> TaskStore:
    tasks: TaskStore = http.app.state.tasks
    return tasks


async def index(http: HttpRequest) -> Response:
    """The web UI: prompt, model picker, live tokens, task mode."""
    return local_page("index.html")


async def health_check(http: HttpRequest) -> Response:
    """Liveness for anyone; details (paths, counters, errors) only with a valid API key
    when keys are set."""
    registry = registry_of(http)
    brief = {name: {"loaded": name in registry.loaded} for name in registry.config.models}
    body: dict[str, Any] = {"status": "ok", "models": brief}
    watcher = http.app.state.config_watcher
    if watcher is not None and watcher.error is not None:
        body["config_error"] = watcher.error  # the old config keeps serving meanwhile
    if not getattr(http.state, "is_authorized", True):
        return json_response(body)
    models: dict[str, Any] = {}
    for name, settings in registry.config.models.items():
        loaded = registry.loaded.get(name)
        models[name] = {"loaded": loaded is not None, "path": settings.path}
        if loaded is not None:
            models[name] |= loaded.describe()
        elif (estimate := registry.estimated_bytes(name)) is not None:
            models[name]["estimated_bytes"] = estimate
        if (embedding := registry.embedding_bytes(name)) is not None:
            models[name]["embedding_context_bytes"] = embedding
        if (failure := registry.failures.get(name)) is not None:
            models[name]["last_error"] = failure.error.message
        models[name]["load_attempts"] = registry.num_load_attempts.get(name, 0)
    body |= {
        "default_model": registry.config.server.default_model,
        "loaded_models": list(registry.loaded),
        "unloading_models": list(registry.unloading),
        "running": sum(m.batcher.num_running for m in registry.loaded.values()),
        "waiting": sum(m.batcher.num_waiting for m in registry.loaded.values()),
        "tasks": await _task_count(tasks_of(http)),
        "task_store": tasks_of(http).describe(),
        "hardware": host_report(),
        # this (event-loop) thread's CPU time: what HTTP, SSE and queues cost it
        "process": {"loop_cpu_seconds": round(time.thread_time(), 4)},
        "memory": registry.memory(),
        "config": watcher.describe() if watcher is not None else None,
        "models": models,
    }
    return json_response(body)


async def _task_count(store: TaskStore) -> int | None:
    """None while the store is unreachable: the health check answers whatever the store does."""
    try:
        return await store.count()
    except TaskStoreUnavailable:
        return None


async def generate_route(http: HttpRequest) -> Response:
    body = await read_body(http, GenerateBody)
    loaded, request = await prepare_body(http, body)
    verdict = submit(loaded, request, stream=body.stream, cache=result_cache_for(http, body))
    headers = {"X-Cache": verdict}
    if body.stream:
        keepalive_s = registry_of(http).config.server.stream_keepalive_s
        return sse_response(_generate_events(request, keepalive_s), headers)
    await wait_done(request, left=client_left(http))
    return json_response(result_body(request), headers=headers)


async def prepare_body(http: HttpRequest, body: GenerateBody) -> tuple[LoadedModel, Request]:
    """A prototype-API body made into a request, ready to submit; logged with the HTTP one.

    A chat model gets the prompt as a user turn in its own template.
    """
    loaded, request = await prepare_generate(registry_of(http), body)
    http.state.log["generation"] = request
    return loaded, request


async def prepare_generate(
    registry: ModelRegistry, body: GenerateBody
) -> tuple[LoadedModel, Request]:
    """``prepare_body`` without an HTTP request (a task run again after a restart)."""
    settings = registry.config.models[registry.resolve_name(body.model_name)]
    prompt: str | Messages = [("user", body.prompt)] if settings.use_chat_template else body.prompt
    params = body.sampling_params()
    grammar = body.grammar_text()
    return await prepare(registry, body.model_name, prompt, params, body, grammar=grammar)


async def _generate_events(request: Request, keepalive_s: float) -> AsyncIterator[bytes]:
    async for piece in stream_events(request, keepalive_s):
        if isinstance(piece, Progress):
            yield progress_frame(request, piece, {"id": request.id, "model": request.model})
            continue
        yield event({"id": request.id, "model": request.model, "text": piece})
    if request.status is RequestStatus.FAILED:
        yield event(failure_error(request).body())
    else:
        yield event({**result_fields(request), "text": ""})  # finish_reason may be "timeout"
    yield DONE


def result_body(request: Request) -> dict[str, Any]:
    """The JSON reply for a finished request (shared by /generate and tasks)."""
    check_failed(request, partial=lambda: result_fields(request))
    return result_fields(request)


def result_fields(request: Request) -> dict[str, Any]:
    return {
        "id": request.id,
        "model": request.model,
        "text": request.text,
        "finish_reason": str(request.finish_reason),
        "usage": usage(request),
        "timings": request.timings(),
        "speculative": speculation_counts(request),
    }
