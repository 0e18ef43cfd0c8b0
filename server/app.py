"""The Starlette application: routes, error handlers, and the models' lifetime."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from starlette.applications import Starlette

from server.errors import EXCEPTION_HANDLERS
from server.registry import ModelRegistry
from server.routes import ROUTES
from server.settings import Config
from server.tasks import TaskStore


def create_app(config: Config) -> Starlette:
    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        app.state.registry = ModelRegistry(config)
        app.state.tasks = TaskStore()
        try:
            yield
        finally:
            await app.state.registry.close()

    return Starlette(
        routes=ROUTES,
        exception_handlers=EXCEPTION_HANDLERS,
        lifespan=lifespan,
    )
