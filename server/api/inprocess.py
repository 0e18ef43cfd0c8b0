"""A route called from inside the server, as a client would call it over HTTP.

A batch's requests and a background response run through the very routes that
answer clients (same validation, same prompt, same reply shape), without a
socket: the request is handed to the router as ASGI messages, behind the
error handlers only. The key check and the access log are for clients;
this work was authorised when it was accepted. Cancelling the call cancels
the engine's request, as a client's disconnect does.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.middleware.exceptions import ExceptionMiddleware
from starlette.types import Message

from server.api.errors import EXCEPTION_HANDLERS
from server.errors import error_body

log = logging.getLogger("server.inprocess")


async def call_route(
    app: Starlette, path: str, body: dict[str, Any], request_id: str | None = None
) -> tuple[int, Any]:
    """POST ``body`` to ``path``; the status and the decoded JSON reply."""
    request_id = request_id or uuid.uuid4().hex
    scope: dict[str, Any] = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [(b"content-type", b"application/json")],
        "client": None,
        "server": None,
        "app": app,
        "state": {"request_id": request_id, "log": {}},
    }
    payload = orjson.dumps(body)
    finished = asyncio.Event()
    is_sent = False
    status, chunks = 500, []

    async def receive() -> Message:
        nonlocal is_sent
        if not is_sent:
            is_sent = True
            return {"type": "http.request", "body": payload, "more_body": False}
        await finished.wait()  # no client to leave: the reply's end is the only disconnect
        return {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]
        elif message["type"] == "http.response.body":
            chunks.append(message.get("body", b""))

    handler = ExceptionMiddleware(app.router, handlers=EXCEPTION_HANDLERS)
    try:
        await handler(scope, receive, send)
    except Exception:  # what the server's error middleware would answer with a 500
        log.exception("in-process POST %s failed", path)
        return 500, error_body(500, "internal server error; the server log has the details")
    finally:
        finished.set()
    try:
        return status, orjson.loads(b"".join(chunks))
    except orjson.JSONDecodeError:
        return 500, error_body(500, "the route did not answer with JSON")
