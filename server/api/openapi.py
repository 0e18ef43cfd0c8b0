"""OpenAPI document built from the routes and the schemas they validate with.

Nothing here is written by hand twice: paths and methods come from the
Starlette routes, summaries from the handlers' docstrings, request bodies from
the same dataclass schemas ``read_body`` parses. ``/docs`` (Swagger UI) and
``/redoc`` load their JS and CSS from this server, so they work offline.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from server.api.http import json_response
from server.api.pages import local_page
from server.json_schema import json_schema

ERROR = {"$ref": "#/components/schemas/Error"}
ERROR_SCHEMA = {
    "type": "object",
    "properties": {
        "error": {
            "type": "object",
            "properties": {
                "message": {"type": "string", "description": "what went wrong and how to fix it"},
                "type": {"type": "string"},
                "code": {
                    "type": ["integer", "string"],
                    "description": "the HTTP status, or OpenAI's code (context_length_exceeded)",
                },
            },
        }
    },
}


def build_openapi(routes: Sequence[BaseRoute], bodies: dict[str, type[Any]]) -> dict[str, Any]:
    components: dict[str, Any] = {"Error": ERROR_SCHEMA}
    paths: dict[str, Any] = {}
    for route in routes:
        if not isinstance(route, Route) or not route.include_in_schema:
            continue
        doc = inspect.getdoc(route.endpoint) or ""
        summary, _, description = doc.partition("\n")
        for method in sorted((route.methods or set()) - {"HEAD"}):
            operation: dict[str, Any] = {
                "summary": summary,
                "operationId": f"{method.lower()}_{route.name}",
                "tags": [_tag(route.path)],
                "responses": {
                    "200": {"description": "success (text/event-stream when stream is true)"},
                    "4XX": {"description": "bad request", "content": _json(ERROR)},
                    "503": {"description": "busy or model unavailable", "content": _json(ERROR)},
                },
            }
            if description.strip():
                operation["description"] = description.strip()
            params = route.param_convertors
            if params:
                operation["parameters"] = [
                    {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
                    for name in params
                ]
            schema = bodies.get(route.path)
            if schema is not None and method == "POST":
                name = schema.__name__
                components[name] = json_schema(schema, components)
                ref = {"$ref": f"#/components/schemas/{name}"}
                operation["requestBody"] = {"required": True, "content": _json(ref)}
            paths.setdefault(route.path_format, {})[method.lower()] = operation
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "edge-llm-server",
            "version": "0.1.0",
            "description": "Batched llama.cpp inference: the prototype JSON API and an "
            'OpenAI-compatible API. Every error is {"error": {message, type, code}}.',
        },
        "paths": paths,
        "components": {"schemas": components},
    }


def _json(schema: dict[str, Any]) -> dict[str, Any]:
    return {"application/json": {"schema": schema}}


# the first prefix that matches names the API family of a route
TAGS = (
    ("/v1/messages", "Anthropic-compatible"),
    ("/v1/", "OpenAI-compatible"),
    ("/api/", "Ollama-compatible"),
)


def _tag(path: str) -> str:
    return next((tag for prefix, tag in TAGS if path.startswith(prefix)), "Prototype API")


async def openapi_json(request: Request) -> Response:
    """The OpenAPI document of this server."""
    spec: dict[str, Any] = request.app.state.openapi
    return json_response(spec)


async def swagger_ui(request: Request) -> Response:
    """Swagger UI for the API, served without any outside asset."""
    return local_page("swagger.html")


async def redoc(request: Request) -> Response:
    """Redoc view of the API, served without any outside asset."""
    return local_page("redoc.html")
