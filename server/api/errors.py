"""Rendering errors as HTTP responses: ``ApiError``, starlette's own, and the unexpected.

``server.errors`` keeps the exception and its JSON body free of starlette, so
models, tasks and serving can raise it; only this layer knows what a response is.
Unexpected exceptions are logged and reported as a 500 without internals.
"""

from __future__ import annotations

import logging
from typing import Any

import orjson
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from server.api.error_shapes import shape_for
from server.errors import ApiError

log = logging.getLogger("server.errors")  # the name the log lines had before the move


def error_response(
    status: int,
    message: str,
    headers: dict[str, str] | None = None,
    extra: dict[str, Any] | None = None,
    path: str = "",
) -> Response:
    """The error in the shape of the family ``path`` belongs to (OpenAI's by default)."""
    body = shape_for(path)(ApiError(status, message, extra=extra))
    return Response(orjson.dumps(body), status, headers, media_type="application/json")


async def handle_api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return error_response(exc.status, exc.message, exc.headers, exc.extra, request.url.path)


async def handle_http_exception(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    message = exc.detail
    if exc.status_code == 404:
        message = f"no route {request.method} {request.url.path}; see /docs for the API"
    elif exc.status_code == 405:
        message = f"{request.method} is not allowed on {request.url.path}"
    return error_response(exc.status_code, message, dict(exc.headers or {}), path=request.url.path)


async def handle_unexpected(request: Request, exc: Exception) -> Response:
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    message = "internal server error; the server log has the details"
    return error_response(500, message, path=request.url.path)


EXCEPTION_HANDLERS = {
    ApiError: handle_api_error,
    HTTPException: handle_http_exception,
    Exception: handle_unexpected,
}
