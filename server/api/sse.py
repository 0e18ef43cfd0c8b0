"""Server-sent events: ``data: <json>`` frames, then ``data: [DONE]``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import orjson
from starlette.responses import StreamingResponse

from batching.request import Request
from server.serving.streams import Progress

DONE = b"data: [DONE]\n\n"
KEEPALIVE = b": keep-alive\n\n"  # an SSE comment: clients skip it, proxies see traffic


def event(data: Any) -> bytes:
    return b"data: " + orjson.dumps(data) + b"\n\n"


def named_event(name: str, data: Any) -> bytes:
    """An event with its type on an ``event:`` line (Anthropic's and Responses' streams)."""
    return b"event: " + name.encode() + b"\n" + event(data)


def sse_response(
    frames: AsyncIterator[bytes], headers: dict[str, str] | None = None
) -> StreamingResponse:
    # no-cache and X-Accel-Buffering keep proxies from holding tokens back
    headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no", **(headers or {})}
    return StreamingResponse(frames, media_type="text/event-stream", headers=headers)


def progress_frame(request: Request, progress: Progress, envelope: dict[str, Any]) -> bytes:
    """An SSE comment for a keep-alive, else ``envelope`` with ``prompt_progress``."""
    if progress.processed is None:
        return KEEPALIVE
    return event({**envelope, "prompt_progress": progress.fields(request)})
