"""The Starlette application: routes, error handlers, and the models' lifetime."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from starlette.applications import Starlette
from starlette.routing import Mount
from starlette.staticfiles import StaticFiles

from server import openai_routes, routes
from server.errors import EXCEPTION_HANDLERS
from server.openapi import ROUTES as DOC_ROUTES
from server.openapi import build_openapi
from server.registry import ModelRegistry
from server.settings import Config
from server.tasks import TaskStore

STATIC = Path(__file__).resolve().parent / "static"


def create_app(config: Config) -> Starlette:
    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        app.state.registry = ModelRegistry(config)
        app.state.tasks = TaskStore()
        try:
            yield
        finally:
            await app.state.registry.close()

    api_routes = [*routes.ROUTES, *openai_routes.ROUTES]
    static = Mount("/static", app=StaticFiles(directory=STATIC), name="static")
    app = Starlette(
        routes=[*api_routes, *DOC_ROUTES, static],
        exception_handlers=EXCEPTION_HANDLERS,
        lifespan=lifespan,
    )
    app.state.openapi = build_openapi(api_routes, routes.BODIES | openai_routes.BODIES)
    return app
