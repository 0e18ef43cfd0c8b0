"""Background responses (``background: true``): answered at once as ``queued``, run at the
batch priority through the route itself, their state kept in the response store.

A background response cut short by a ``kill -9`` or a shutdown runs again when the
server starts (its record keeps the body to run), until ``task_max_attempts`` runs
were cut short (then it fails, as a task does); one cancelled ends ``cancelled``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from starlette.applications import Starlette

from server.api.inprocess import call_route
from server.serving.background import BACKGROUND_PRIORITY
from server.tasks.responses import ResponseStore

log = logging.getLogger("server.responses")
# fields of the outer request that the inner, foreground one must not have
OUTER = ("background", "previous_response_id", "stream", "store")


class BackgroundResponses:
    def __init__(
        self, app: Starlette, store: ResponseStore, *, priority: int, max_attempts: int
    ) -> None:
        self.app = app
        self.store = store
        self.priority = priority
        self.max_attempts = max_attempts
        self._running: dict[str, asyncio.Task[None]] = {}
        self._cancelling: set[str] = set()

    async def start(self, record: dict[str, Any], data: dict[str, Any]) -> None:
        """Record a queued response and run it (``data``: the body, history spliced in)."""
        record["request"] = {k: v for k, v in data.items() if k not in OUTER} | {"store": False}
        await self.store.put(record)
        self._spawn(record)

    async def resume(self) -> None:
        """Start-up: run again what a dead or stopped process left unfinished."""
        for record in await self.store.unfinished():
            self._spawn(record)

    async def cancel(self, record: dict[str, Any]) -> dict[str, Any]:
        """Cancel a running background response; its Response as it ends."""
        response_id = record["response"]["id"]
        task = self._running.get(response_id)
        if task is None:
            return dict(record["response"])
        self._cancelling.add(response_id)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.shield(task)
        stored = await self.store.get(response_id)
        return dict(stored["response"]) if stored else dict(record["response"])

    async def close(self) -> None:
        tasks = list(self._running.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _spawn(self, record: dict[str, Any]) -> None:
        response_id = record["response"]["id"]
        task = asyncio.get_running_loop().create_task(self._run(record), name=response_id)
        self._running[response_id] = task
        task.add_done_callback(lambda _: self._running.pop(response_id, None))

    async def _run(self, record: dict[str, Any]) -> None:
        BACKGROUND_PRIORITY.set(self.priority)
        queued = record["response"]
        record = record | {"attempts": record.get("attempts", 0) + 1}  # runs begun
        if record["attempts"] > self.max_attempts:
            runs = record["attempts"] - 1
            message = f"failed after {runs} runs, each cut short by the server process dying"
            failed = {"status": "failed", "error": {"code": "server_error", "message": message}}
            await self.store.put(record | {"response": queued | failed})
            return
        try:
            await self.store.put(record | {"response": queued | {"status": "in_progress"}})
            status, body = await call_route(self.app, "/v1/responses", record["request"])
        except asyncio.CancelledError:
            if queued["id"] not in self._cancelling:
                raise  # a shutdown: it runs again on the next start
            self._cancelling.discard(queued["id"])
            await self.store.put(record | {"response": queued | {"status": "cancelled"}})
            return
        if status == 200:
            # the inner response's own id and echo give way to the outer ones
            keep = ("id", "created_at", "previous_response_id", "store", "background")
            response = body | {k: queued[k] for k in keep}
        else:
            error = body.get("error", {}) if isinstance(body, dict) else {}
            code = "server_error" if status >= 500 else "invalid_prompt"  # the SDK's codes
            failure = {"code": code, "message": error.get("message")}
            response = queued | {"status": "failed", "error": failure}
        await self.store.put(record | {"response": response})
