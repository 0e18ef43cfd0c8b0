"""JSON replies and request bodies: what every family's routes share.

The field policy, one for every family: a field the family's official API defines
is declared in its schema (honoured, ignored where that cannot change the reply, or
refused by a ``ValueError`` saying why); any other field is ignored and reported, in
the ``X-Ignored-Fields`` reply header (set by ``RequestContextMiddleware``) and the
request's log line, or refused with ``server.strict_fields``. SDKs add fields every
few weeks: a server that refuses each one breaks with every client update.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import orjson
from starlette.requests import Request as HttpRequest
from starlette.responses import Response

from server.errors import ApiError
from server.models.registry import ModelRegistry
from server.result_cache import ResultCache
from server.schema import parse
from server.serving.options import ServingOptions
from server.serving.run import cache_for

T = TypeVar("T")


def registry_of(http: HttpRequest) -> ModelRegistry:
    registry: ModelRegistry = http.app.state.registry
    return registry


def result_cache_for(http: HttpRequest, options: ServingOptions) -> ResultCache | None:
    """The result cache, unless the body, ``Cache-Control: no-store`` or the server opts out."""
    no_store = "no-store" in http.headers.get("cache-control", "").lower()
    return cache_for(registry_of(http), options, no_store=no_store)


def client_left(http: HttpRequest) -> Callable[[], Awaitable[None]]:
    """What returns once the client has gone (for ``server.serving.run.wait_done``)."""

    async def disconnected() -> None:
        # The body has been read, so the next ASGI message can only be the disconnect.
        while (await http.receive())["type"] != "http.disconnect":
            pass

    return disconnected


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(body), status, headers, media_type="application/json")


async def read_body(
    http: HttpRequest, schema: type[T], precheck: Callable[[object], str | None] | None = None
) -> T:
    """Decode and validate a JSON body; ``precheck`` may refuse it first with a message."""
    data = await read_json(http)
    if precheck is not None and (refusal := precheck(data)):
        raise ApiError(400, refusal)
    return parse_body(schema, data, http)


async def read_json(http: HttpRequest) -> object:
    """The body, decoded; a 400 when it is not JSON."""
    try:
        return orjson.loads(await http.body())
    except orjson.JSONDecodeError as exc:
        message = f"the request body is not valid JSON ({exc}); send a JSON object"
        raise ApiError(400, message) from None


def parse_body(schema: type[T], data: object, http: HttpRequest | None = None) -> T:
    """Decoded JSON validated as ``schema``; a 400 saying what to fix. With the request
    ``http``, the field policy: unknown fields ignored and reported (or, with
    strict_fields, refused); without, refused."""
    strict = http is None or registry_of(http).config.server.strict_fields
    ignored: list[str] | None = None if strict else []
    try:
        body = parse(schema, data, ignored=ignored)
    except ValueError as exc:
        raise ApiError(400, str(exc)) from None
    if ignored and http is not None:
        http.state.log["ignored_fields"] = ignored  # the middleware's header and log line
    return body


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
