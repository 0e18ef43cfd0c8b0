"""The error bodies of other API families: the same ``ApiError``, another JSON shape.

The server's own routes answer OpenAI's shape (``server.errors``); a route of
Anthropic's or Ollama's API is wrapped so its clients read errors as they expect.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from server.errors import ApiError

Handler = Callable[[Request], Awaitable[Response]]

ANTHROPIC_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    503: "overloaded_error",
    504: "timeout_error",
}


def anthropic_error(error: ApiError) -> dict[str, Any]:
    """``{"type": "error", "error": {"type", "message"}}``, also a stream's error event."""
    kind = ANTHROPIC_TYPES.get(error.status, "api_error")
    return {"type": "error", "error": {"type": kind, "message": error.message}}


def ollama_error(error: ApiError) -> dict[str, Any]:
    """``{"error": "<message>"}``, also a stream's last line."""
    return {"error": error.message}


def shaped_errors(shape: Callable[[ApiError], dict[str, Any]]) -> Callable[[Handler], Handler]:
    """A route decorator: its ``ApiError``s answered in ``shape`` (status and headers kept)."""

    def decorate(handler: Handler) -> Handler:
        @functools.wraps(handler)
        async def wrapped(http: Request) -> Response:
            try:
                return await handler(http)
            except ApiError as exc:
                body = orjson.dumps(shape(exc))
                return Response(body, exc.status, exc.headers, media_type="application/json")

        return wrapped

    return decorate
