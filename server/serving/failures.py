"""The errors a request that did not end normally answers with, in every family.

A request fails (500, or 503 when the model could not serve it: retry) or passes
its deadline (504). A JSON reply is then that error; a stream ends with it, in
the family's error frame, never with a normal finish: a client must not take a
truncated reply for a whole one. (The prototype's own stream says
``finish_reason: "timeout"`` in its last line, as documented.)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from batching.request import Failure, FinishReason, Request, RequestStatus
from server.errors import ApiError

PAST_DEADLINE = "the request passed its deadline (see `timeout`)"


def failure_error(request: Request) -> ApiError:
    """The error a failed request answers with: 503 when the model could not serve it
    (executor died, shutdown: retry), 500 when this request itself broke."""
    message = f"generation failed: {request.error}"
    if request.failure is Failure.UNAVAILABLE:
        return ApiError(503, message, {"Retry-After": "1"})
    return ApiError(500, message)


def deadline_error(partial: dict[str, Any] | None = None) -> ApiError:
    """A 504; a JSON reply carries what was generated as ``partial`` (a stream sent it)."""
    if partial is None:
        return ApiError(504, PAST_DEADLINE)
    return ApiError(504, PAST_DEADLINE + "; `partial` is what it had", extra={"partial": partial})


def ending_error(request: Request) -> ApiError | None:
    """The error a finished stream ends with instead of its last frame, if any."""
    if request.status is RequestStatus.FAILED:
        return failure_error(request)
    if request.finish_reason is FinishReason.TIMEOUT:
        return deadline_error()
    return None


def check_failed(request: Request, partial: Callable[[], dict[str, Any]]) -> None:
    """A failed request is a 500 or 503; one past its deadline a 504 with ``partial()``,
    the output so far in the family's shape."""
    if request.status is RequestStatus.FAILED:
        raise failure_error(request)
    if request.finish_reason is FinishReason.TIMEOUT:
        raise deadline_error(partial())
