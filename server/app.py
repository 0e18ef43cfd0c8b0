"""The Starlette application: routes, error handlers, and the models' lifetime."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.routing import Mount
from starlette.staticfiles import StaticFiles

from server import metrics as metrics_routes
from server import openai_routes, routes
from server.errors import EXCEPTION_HANDLERS
from server.metrics import Metrics, RequestMetricsMiddleware
from server.openapi import ROUTES as DOC_ROUTES
from server.openapi import build_openapi
from server.registry import ModelRegistry
from server.settings import Config
from server.tasks import TaskStore

STATIC = Path(__file__).resolve().parent / "static"


def create_app(config: Config) -> Starlette:
    metrics_holder: list[Metrics] = []  # the registry reports to the metrics, which read it
    registry = ModelRegistry(config, on_request_done=lambda r: metrics_holder[0].observe_done(r))
    metrics = Metrics(registry)
    metrics_holder.append(metrics)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        try:
            yield
        finally:
            await registry.close()

    api_routes = [*routes.ROUTES, *openai_routes.ROUTES]
    static = Mount("/static", app=StaticFiles(directory=STATIC), name="static")
    app = Starlette(
        routes=[*api_routes, *metrics_routes.ROUTES, *DOC_ROUTES, static],
        exception_handlers=EXCEPTION_HANDLERS,
        middleware=[Middleware(RequestMetricsMiddleware, metrics=metrics)],
        lifespan=lifespan,
    )
    app.state.registry = registry
    app.state.tasks = TaskStore()
    app.state.metrics = metrics
    app.state.openapi = build_openapi(api_routes, routes.BODIES | openai_routes.BODIES)
    return app
