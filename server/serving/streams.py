"""A streamed request's pieces as they come: text, prompt progress and keep-alives
(``stream_events``), text only, or several requests' merged; leaving early cancels.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import AsyncIterator
from typing import Any

from batching.request import Request
from server.serving.run import cancel_all


@dataclasses.dataclass(slots=True, frozen=True)
class Progress:
    """No new text yet: how many prompt tokens are read (None: only a keep-alive)."""

    processed: int | None

    def fields(self, request: Request) -> dict[str, Any]:
        """llama-server's ``prompt_progress`` object."""
        started = request.started_at or request.created_at
        return {
            "total": request.num_prompt_tokens,
            "cache": request.num_cached_tokens,
            "processed": self.processed,
            "time_ms": round((time.monotonic() - started) * 1000, 1),
        }


KEEPALIVE = Progress(None)


async def stream_events(
    request: Request, keepalive_s: float | None = None
) -> AsyncIterator[str | Progress]:
    """Pieces of text as they are decoded, prompt progress when the request asked for it,
    and before the first text a keep-alive every ``keepalive_s`` (a proxy then does not
    time out a long prefill or wait in the queue); leaving early cancels the sequence.

    Pieces that queued while the client lagged go out joined, as one frame.
    """
    queue = request.stream
    assert queue is not None
    has_text = False
    try:
        while True:
            if has_text or keepalive_s is None:
                item = await queue.get()
            else:
                try:
                    item = await asyncio.wait_for(queue.get(), keepalive_s)
                except TimeoutError:
                    yield KEEPALIVE
                    continue
            if item is None:
                return
            request.stream_read_at = time.monotonic()
            if isinstance(item, int):
                yield Progress(item)
                continue
            is_done = False
            if not queue.empty():
                parts = [item]
                while not queue.empty():
                    if (more := queue.get_nowait()) is None:
                        is_done = True
                        break
                    if isinstance(more, str):
                        parts.append(more)
                item = "".join(parts)
            has_text = True
            yield item
            if is_done:
                return
    finally:
        if not request.status.is_done:
            request.cancel()


async def stream_text(request: Request) -> AsyncIterator[str]:
    """``stream_events``' text only."""
    async for item in stream_events(request):
        if isinstance(item, str):
            yield item


async def merged_streams(
    requests: list[Request], keepalive_s: float | None = None
) -> AsyncIterator[tuple[int, str | Progress | None]]:
    """(index, piece) from several streamed requests as they come; (index, None) when
    request ``index`` is done. Leaving early cancels every request still running. One
    request also gives its progress and keep-alives (``stream_events``)."""
    if len(requests) == 1:  # the usual case: no pump task or second queue
        async for piece in stream_events(requests[0], keepalive_s):
            yield 0, piece
        yield 0, None
        return
    merged: asyncio.Queue[tuple[int, str | None]] = asyncio.Queue()

    async def pump(index: int, request: Request) -> None:
        async for piece in stream_text(request):
            merged.put_nowait((index, piece))
        merged.put_nowait((index, None))

    tasks = [asyncio.ensure_future(pump(i, r)) for i, r in enumerate(requests)]
    try:
        for _ in range(len(requests)):
            while (item := await merged.get())[1] is not None:
                yield item
            yield item
    finally:
        for task in tasks:
            task.cancel()
        cancel_all(requests)
