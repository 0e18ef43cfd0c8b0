"""The error bodies of other API families: the same ``ApiError``, another JSON shape.

The server's own routes answer OpenAI's shape (``server.errors``); a route of
Anthropic's or Ollama's API is wrapped so its clients read errors as they expect, and
what the app answers before a route runs (401, 413, 503 while draining, a router
404 or 405, a 500) takes the shape of the family its path belongs to (``shape_for``).
A prompt too long keeps its ``context_length_exceeded`` code in every shape: agents
compact their history on it. The routes only OpenAI's SDK speaks (Responses, Files,
Batches) answer OpenAI's own shape, a string ``code``.
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
    405: "invalid_request_error",
    409: "invalid_request_error",
    413: "request_too_large",
    415: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
    503: "overloaded_error",
    504: "timeout_error",
}


OVERFLOW = "context_length_exceeded"


def anthropic_error(error: ApiError) -> dict[str, Any]:
    """``{"type": "error", "error": {"type", "message"}}``, also a stream's error event.
    A prompt too long says so in Anthropic's words, "prompt is too long: N tokens > M
    maximum", which Claude Code and litellm match to compact the conversation."""
    kind = ANTHROPIC_TYPES.get(error.status, "api_error")
    body = {"type": kind, "message": error.message}
    if error.extra.get("code") == OVERFLOW:
        counts = f"{error.extra['n_prompt_tokens']} tokens > {error.extra['n_ctx']} maximum"
        body |= {"message": f"prompt is too long: {counts}; {error.message}", "code": OVERFLOW}
    return {"type": "error", "error": body}


def ollama_error(error: ApiError) -> dict[str, Any]:
    """``{"error": "<message>"}``, also a stream's last line."""
    code = error.extra.get("code")
    return {"error": error.message} | ({"code": code} if code == OVERFLOW else {})


def openai_error(error: ApiError) -> dict[str, Any]:
    return error.body()


# OpenAI's error codes where the status alone says which; others are null, as OpenAI's
CODES = {401: "invalid_api_key", 429: "rate_limit_exceeded"}
# the routes only OpenAI's SDK speaks: llama-server's integer code would be out of place
OPENAI_ONLY = ("/v1/responses", "/responses", "/v1/files", "/v1/batches")


def openai_strict_error(error: ApiError) -> dict[str, Any]:
    """OpenAI's own shape: ``code`` a string or null (llama-server's routes, which this
    server's other OpenAI paths also are, send the HTTP status there) and ``param``."""
    body = error.body()
    inner = body["error"]
    code = inner.get("code")
    inner["code"] = code if isinstance(code, str) else CODES.get(error.status)
    inner.setdefault("param", None)
    return body


def shape_for(path: str) -> Callable[[ApiError], dict[str, Any]]:
    """The error shape of the API family ``path`` belongs to."""
    if path == "/v1/messages" or path.startswith("/v1/messages/"):
        return anthropic_error
    if path.startswith("/api/"):
        return ollama_error
    if any(path == p or path.startswith(p + "/") for p in OPENAI_ONLY):
        return openai_strict_error
    return openai_error


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
