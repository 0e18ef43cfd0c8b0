"""API errors: one exception type, one JSON shape, the right status.

Every error a client can see looks like OpenAI's:
``{"error": {"message": ..., "type": ..., "code": <status>}}``; the message
says what to change. Handlers, models, tasks and serving raise ``ApiError``;
this module imports no web framework so that all of them can (the responses
are rendered in ``server.api.errors``).
"""

from __future__ import annotations

from typing import Any

ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    404: "not_found_error",
    405: "invalid_request_error",
    409: "invalid_request_error",  # e.g. cancelling a task that already ended
    413: "invalid_request_error",
    415: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
    503: "server_unavailable_error",
    504: "timeout_error",
}


class ApiError(Exception):
    def __init__(
        self,
        status: int,
        message: str,
        headers: dict[str, str] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}
        self.extra = extra or {}  # more fields inside "error", e.g. a timed-out partial result

    def body(self) -> dict[str, Any]:
        """The error as JSON (also what a stream's error frame carries)."""
        return error_body(self.status, self.message, self.extra)


def error_body(status: int, message: str, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    kind = ERROR_TYPES.get(status, "server_error")
    return {"error": {"message": message, "type": kind, "code": status, **(extra or {})}}


def context_overflow(num_prompt_tokens: int, n_ctx: int, model: str, param: str) -> ApiError:
    """A prompt too long for the model, in the shape both kinds of clients act on: OpenAI's
    ``code: context_length_exceeded`` (agents compact their history on it) and
    llama-server's ``type: exceed_context_size_error`` with ``n_prompt_tokens`` and
    ``n_ctx``; the message carries both servers' wording, which other clients match."""
    message = (
        f"request ({num_prompt_tokens} tokens) exceeds the available context size ({n_ctx} "
        f"tokens), the maximum context length of model {model!r} per request; shorten "
        f"the {param}"
    )
    if param == "messages":
        message += " (truncate: true on /v1/chat/completions drops the oldest turns)"
    extra = {
        "type": "exceed_context_size_error",
        "code": "context_length_exceeded",
        "param": param,
        "n_prompt_tokens": num_prompt_tokens,
        "n_ctx": n_ctx,
    }
    return ApiError(400, message, extra=extra)
