"""The Starlette application: routes, error handlers, and the models' lifetime."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.routing import Mount
from starlette.staticfiles import StaticFiles

from batching.faults import FAULTS
from server.api.batches.runner import BatchRunner
from server.api.errors import EXCEPTION_HANDLERS
from server.api.middleware import (
    ApiKeyMiddleware,
    CorsMiddleware,
    RequestContextMiddleware,
    load_api_keys,
)
from server.api.openapi import build_openapi
from server.api.prototype.tasks import rerun_orphans
from server.api.responses.background import BackgroundResponses
from server.api.routes import API_ROUTES, BODIES, DEBUG_ROUTES, SERVICE_ROUTES
from server.metrics import Metrics, RequestMetricsMiddleware
from server.models.registry import ModelRegistry
from server.models.reload import ConfigSource, ConfigWatcher
from server.settings import Config
from server.tasks.backends import open_task_store
from server.tasks.batches import BatchStore
from server.tasks.files import FileStore
from server.tasks.responses import ResponseStore

STATIC = Path(__file__).resolve().parent / "static"


def api_description() -> dict[str, Any]:
    """The OpenAPI document of the API routes (served at /openapi.json)."""
    return build_openapi(API_ROUTES, BODIES)


def create_app(config: Config, source: ConfigSource | None = None) -> Starlette:
    """The app; with ``source``, config.json is watched and reloaded live (and on SIGHUP)."""
    metrics_holder: list[Metrics] = []  # the registry reports to the metrics, which read it
    registry = ModelRegistry(config, on_request_done=lambda r: metrics_holder[0].observe_done(r))
    metrics = Metrics(registry)
    metrics_holder.append(metrics)

    settings = config.server
    tasks = open_task_store(settings)
    data = Path(settings.data_dir)
    files = FileStore(data / "files", max_age_s=settings.files_max_age_hours * 3600)
    batches = BatchStore(data / "batches.sqlite3", max_age_s=settings.files_max_age_hours * 3600)
    responses = ResponseStore(
        data / "responses.sqlite3",
        max_responses=settings.max_stored_responses,
        max_age_s=settings.responses_max_age_hours * 3600,
    )

    watcher = ConfigWatcher(source, registry) if source is not None else None

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await tasks.start()
        # held here: a task's run may not be garbage-collected while it is in flight
        app.state.rerun = asyncio.get_running_loop().create_task(
            rerun_orphans(registry, tasks), name="rerun-orphaned-tasks"
        )
        await app.state.batch_runner.resume()
        await app.state.background_responses.resume()
        await responses.expire()
        watching = None
        loop = asyncio.get_running_loop()
        if watcher is not None:
            watching = loop.create_task(watcher.run(), name="config-watcher")
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.add_signal_handler(signal.SIGHUP, watcher.request_reload)
        try:
            yield
        finally:
            app.state.rerun.cancel()
            if watching is not None:
                watching.cancel()
            # first: their requests must not fail as the models close, but run again on
            # the next start
            await app.state.batch_runner.close()
            await app.state.background_responses.close()
            await registry.close()
            await tasks.close()
            batches.close()
            responses.close()
            files.close()

    static = Mount("/static", app=StaticFiles(directory=STATIC), name="static")
    flags = SimpleNamespace(is_draining=False)  # set on SIGTERM; read by every request
    middleware = [
        Middleware(RequestMetricsMiddleware, metrics=metrics),
        Middleware(
            RequestContextMiddleware,
            max_body_bytes=settings.max_body_bytes,
            state=flags,
            body_limits={"/v1/files": settings.max_file_bytes},  # a batch's input file
        ),
    ]
    # No origin is allowed unless listed; preflights are answered either way (see CorsMiddleware)
    middleware.append(
        Middleware(
            CorsMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST", "DELETE"],
            allow_headers=["*"],
            expose_headers=["X-Request-ID", "X-Ignored-Fields"],
        )
    )
    keys = load_api_keys(settings.api_keys_file)
    if keys:
        middleware.append(Middleware(ApiKeyMiddleware, keys=keys))
    test_routes = DEBUG_ROUTES if FAULTS.is_enabled else []
    app = Starlette(
        routes=[*API_ROUTES, *SERVICE_ROUTES, *test_routes, static],
        exception_handlers=EXCEPTION_HANDLERS,
        middleware=middleware,
        lifespan=lifespan,
    )
    app.state.flags = flags
    app.state.registry = registry
    app.state.config_watcher = watcher
    app.state.tasks = tasks
    app.state.files = files
    app.state.batch_runner = BatchRunner(app, batches, files, settings)
    app.state.responses = responses
    app.state.background_responses = BackgroundResponses(
        app, responses, priority=settings.batch_priority, max_attempts=settings.task_max_attempts
    )
    app.state.metrics = metrics
    app.state.openapi = api_description()
    return app
