"""JSON replies and request bodies: what every family's routes share."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import orjson
from starlette.requests import Request as HttpRequest
from starlette.responses import Response

from server.errors import ApiError
from server.schema import parse

T = TypeVar("T")


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(body), status, headers, media_type="application/json")


async def read_body(
    http: HttpRequest, schema: type[T], precheck: Callable[[object], str | None] | None = None
) -> T:
    """Decode and validate a JSON body; ``precheck`` may refuse it first with a message."""
    data = await read_json(http)
    if precheck is not None and (refusal := precheck(data)):
        raise ApiError(400, refusal)
    return parse_body(schema, data)


async def read_json(http: HttpRequest) -> object:
    """The body, decoded; a 400 when it is not JSON."""
    try:
        return orjson.loads(await http.body())
    except orjson.JSONDecodeError as exc:
        message = f"the request body is not valid JSON ({exc}); send a JSON object"
        raise ApiError(400, message) from None


def parse_body(schema: type[T], data: object) -> T:
    """Decoded JSON validated as ``schema``; a 400 saying what to fix."""
    try:
        return parse(schema, data)
    except ValueError as exc:
        raise ApiError(400, str(exc)) from None


def query_int(http: HttpRequest, name: str, default: int, low: int, high: int) -> int:
    """An integer query parameter within [low, high]; a 400 otherwise."""
    raw = http.query_params.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ApiError(400, f"query parameter {name} must be an integer, got {raw!r}") from None
    if not low <= value <= high:
        raise ApiError(400, f"query parameter {name} must be between {low} and {high}, got {value}")
    return value
