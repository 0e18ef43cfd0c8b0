"""JSON replies and request bodies: what every family's routes share.

The field policy, one for every family: a field the family's official API defines
is declared in its schema (honoured, ignored where that cannot change the reply, or
refused by a ``ValueError`` saying why); any other field is ignored and reported, in
the ``X-Ignored-Fields`` reply header (set by ``RequestContextMiddleware``) and the
request's log line, or refused with ``server.strict_fields``. SDKs add fields every
few weeks: a server that refuses each one breaks with every client update.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import orjson
from starlette.requests import Request as HttpRequest
from starlette.responses import Response

from server.errors import ApiError
from server.generation import registry_of
from server.schema import parse

T = TypeVar("T")


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(body), status, headers, media_type="application/json")


async def read_body(
    http: HttpRequest, schema: type[T], precheck: Callable[[object], str | None] | None = None
) -> T:
    """Decode and validate a JSON body; ``precheck`` may refuse it first with a message."""
    raw = await http.body()
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        message = f"the request body is not valid JSON ({exc}); send a JSON object"
        raise ApiError(400, message) from None
    if precheck is not None and (refusal := precheck(data)):
        raise ApiError(400, refusal)
    strict = registry_of(http).config.server.strict_fields
    ignored: list[str] | None = None if strict else []
    try:
        body = parse(schema, data, ignored=ignored)
    except ValueError as exc:
        raise ApiError(400, str(exc)) from None
    if ignored:
        http.state.log["ignored_fields"] = ignored  # the middleware's header and log line
    return body
