"""ASGI middleware: request ids and access logs, body limit, draining, API keys.

Pure ASGI (no BaseHTTPMiddleware), so streamed responses pass through
untouched and a client's disconnect still reaches the route.
"""

from __future__ import annotations

import functools
import hmac
import logging
import os
import re
import time
import uuid
from pathlib import Path
from typing import Any

from starlette.datastructures import Headers, MutableHeaders
from starlette.exceptions import HTTPException
from starlette.middleware.cors import CORSMiddleware
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from server.api.errors import error_response

access_log = logging.getLogger("server.access")
REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
NOT_VISIBLE = re.compile(r"[^\x21-\x7e]")  # a header value cannot begin or end with a space
MAX_IGNORED_HEADER = 1024
ALWAYS_OPEN = ("/health_check",)  # answered while draining, and without a key
# no data in them: no key needed (llama-server's /health is public too)
PUBLIC_PAGES = ("/", "/docs", "/redoc", "/openapi.json", "/health", "/v1/health")


class RequestContextMiddleware:
    """Gives every request an id (the client's ``X-Request-ID`` if sane), refuses
    work while draining, bounds the body size, and writes one log line per request.
    Handlers add fields to the line through ``request.state.log``."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        max_body_bytes: int,
        state: Any,
        body_limits: dict[str, int] | None = None,
    ) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.body_limits = body_limits or {}  # paths that take larger bodies (uploads)
        self.state = state  # the application's state: ``is_draining`` lives there

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        given = headers.get("x-request-id", "")
        request_id = given if REQUEST_ID.match(given) else uuid.uuid4().hex
        fields: dict[str, Any] = {}
        scope.setdefault("state", {}).update(request_id=request_id, log=fields)
        started = time.perf_counter()
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [
                    *message.get("headers", []),
                    (b"x-request-id", request_id.encode()),
                    *ignored_header(fields.get("ignored_fields")),
                ]
            await send(message)

        try:
            if getattr(self.state, "is_draining", False) and scope["path"] not in ALWAYS_OPEN:
                response = error_response(
                    503,
                    "the server is shutting down; retry on another instance or after it restarts",
                    {"Retry-After": "5"},
                    path=scope["path"],
                )
                await response(scope, receive, send_with_id)
                return
            limit = self.body_limits.get(scope["path"], self.max_body_bytes)
            declared = headers.get("content-length")
            if declared is not None and declared.isdigit() and int(declared) > limit:
                response = error_response(413, self._too_large(limit), path=scope["path"])
                await response(scope, receive, send_with_id)
                return
            await self.app(scope, self._counting(receive, limit), send_with_id)
        finally:
            access_log.info(
                "%s %s %s",
                scope["method"],
                scope["path"],
                status,
                extra={
                    "fields": {
                        "request_id": request_id,
                        "method": scope["method"],
                        "path": scope["path"],
                        "status": status,
                        "ms": round((time.perf_counter() - started) * 1000, 1),
                        **fields,
                    }
                },
            )

    def _too_large(self, limit: int) -> str:
        return f"the request body is larger than {limit} bytes; send less"

    def _counting(self, receive: Receive, limit: int) -> Receive:
        """A chunked body has no Content-Length: count it as it arrives."""
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > limit:
                raise HTTPException(413, self._too_large(limit))
            return message

        return counted


def ignored_header(names: list[str] | None) -> list[tuple[bytes, bytes]]:
    """``X-Ignored-Fields``: the body's fields the server did not know (``read_body``).
    The names are the client's: anything but printable ASCII becomes ``?`` (a header
    cannot carry it, nor a space at either end), an empty name is ``""``, and a long list
    is cut (the log line keeps them all)."""
    if not names:
        return []
    text = ", ".join(NOT_VISIBLE.sub("?", name) or '""' for name in names)
    if len(text) > MAX_IGNORED_HEADER:
        text = text[: MAX_IGNORED_HEADER - 3] + "..."
    return [(b"x-ignored-fields", text.encode())]


# llama-server's "localhost" entry: a browser page served from this machine, any port
LOCAL_ORIGINS = r"https?://(localhost|127\.0\.0\.1|\[::1\])(:[0-9]{1,5})?"


class CorsMiddleware(CORSMiddleware):
    """Starlette's CORS, answering an origin it does not allow as llama-server does: a
    preflight gets a plain 200 and no CORS headers (the browser then blocks the call
    itself), a request its reply without them. Installed even with no origins listed,
    outside the key check: a browser's preflight carries no key, so it never gets a 401.

    As llama-server's: ``"localhost"`` among the origins allows every page served from
    this machine (any port), an allowed origin is reflected with credentials allowed
    (the server sets no cookies; a page may send its key), and OPTIONS is listed."""

    def __init__(self, app: ASGIApp, /, *, allow_origins: list[str], **options: Any) -> None:
        methods = [*options.pop("allow_methods", ("GET",)), "OPTIONS"]
        super().__init__(
            app,
            allow_origins=allow_origins,
            allow_methods=list(dict.fromkeys(methods)),
            allow_credentials=True,
            allow_origin_regex=LOCAL_ORIGINS if "localhost" in allow_origins else None,
            **options,
        )

    def preflight_response(self, request_headers: Headers) -> Response:
        if not self.is_allowed_origin(request_headers["origin"]):
            return Response(status_code=200, headers={"Vary": "Origin"})
        response = super().preflight_response(request_headers)
        response.raw_headers = [(cors_case(k), v) for k, v in response.raw_headers]
        return response

    async def send(self, message: Message, send: Send, request_headers: Headers) -> None:
        if message["type"] != "http.response.start":  # a body frame: every streamed token
            await send(message)
            return
        send = functools.partial(_send_cors_case, send)
        origin = request_headers.get("origin")  # a scan of the request's headers
        if origin is None:
            await send(message)
        elif self.is_allowed_origin(origin):
            await super().send(message, send, request_headers)
        else:
            headers = MutableHeaders(scope=message)
            headers["Vary"] = ", ".join([*headers.getlist("Vary"), "Origin"])
            await send(message)


def cors_case(name: bytes) -> bytes:
    """``Access-Control-Allow-Origin`` as llama-server writes it: names are case-blind in
    HTTP, but clients that copy the headers into a dict (its own tests do) are not."""
    if not name.lower().startswith(b"access-control-"):
        return name
    return b"-".join(part.capitalize() for part in name.split(b"-"))


async def _send_cors_case(send: Send, message: Message) -> None:
    message["headers"] = [(cors_case(k), v) for k, v in message.get("headers", [])]
    await send(message)


class ApiKeyMiddleware:
    """``Authorization: Bearer <key>`` or ``X-API-Key: <key>``, compared in constant time."""

    def __init__(self, app: ASGIApp, *, keys: frozenset[str]) -> None:
        self.app = app
        self.keys = [k.encode() for k in keys]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or path in PUBLIC_PAGES or path.startswith("/static/"):
            await self.app(scope, receive, send)
            return
        matched = self._has_valid_key(Headers(scope=scope))
        if path in ALWAYS_OPEN:  # answered either way; the route shows less without a key
            scope.setdefault("state", {})["is_authorized"] = matched
            await self.app(scope, receive, send)
            return
        if not matched:
            message = (
                "a valid API key is required: send 'Authorization: Bearer <key>' or "
                "'X-API-Key: <key>'"
            )
            response = error_response(
                401, message, {"WWW-Authenticate": "Bearer"}, path=scope["path"]
            )
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)

    def _has_valid_key(self, headers: Headers) -> bool:
        auth = headers.get("authorization", "")
        given = auth[7:] if auth.lower().startswith("bearer ") else headers.get("x-api-key", "")
        # compare with every key, always: the time taken says nothing about which matched
        matched = False
        for key in self.keys:
            matched |= hmac.compare_digest(given.encode(), key)
        return matched


def load_api_keys(keys_file: str | None, env: dict[str, str] | None = None) -> frozenset[str]:
    """Keys from EDGE_LLM_API_KEYS (comma-separated) and from a file, one per line."""
    environ = os.environ if env is None else env
    keys = {k.strip() for k in environ.get("EDGE_LLM_API_KEYS", "").split(",")}
    if keys_file is not None:
        path = Path(keys_file)
        if not path.is_file():
            raise ValueError(f"server.api_keys_file: {path} does not exist")
        keys |= {line.strip() for line in path.read_text().splitlines() if not line.startswith("#")}
    return frozenset(k for k in keys if k)
