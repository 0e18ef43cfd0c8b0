"""Explicit model control: load now, unload now (behind the API keys when set)."""

from __future__ import annotations

from starlette.requests import Request as HttpRequest
from starlette.responses import Response

from server.api.fields import KeepAliveFields
from server.api.http import json_response, read_body, registry_of


async def load_model(http: HttpRequest) -> Response:
    """Load a model now (waiting for room in the memory budget, as a request would)."""
    body = await read_body(http, KeepAliveFields) if await http.body() else KeepAliveFields()
    registry = registry_of(http)
    loaded = await registry.load(http.path_params["name"], body.keep_alive)
    return json_response(
        {
            "model": loaded.name,
            "loaded": True,
            "load_seconds": round(loaded.load_seconds, 3),
            "keep_alive_s": loaded.keep_alive_s,
            "expires_at": loaded.expires_at(),
            "memory": loaded.footprint.as_dict(),
        }
    )


async def unload_model(http: HttpRequest) -> Response:
    """Unload a model: its running and queued requests finish first."""
    registry = registry_of(http)
    name = registry.resolve_name(http.path_params["name"])
    was_loaded = await registry.unload(name)
    return json_response({"model": name, "loaded": False, "was_loaded": was_loaded})
