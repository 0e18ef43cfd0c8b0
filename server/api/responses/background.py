"""Background responses (``background: true``): answered at once as ``queued``, run at the
batch priority through the route itself, their state kept in the response store.

A background response cut short by a ``kill -9`` or a shutdown runs again when the
server starts (its record keeps the body to run), until ``task_max_attempts`` runs
were cut short (then it fails, as a task does); one cancelled ends ``cancelled``.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from starlette.applications import Starlette

from server.api.inprocess import call_route
from server.api.runs import Runs
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
        self._runs = Runs()

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
        if not self._runs.is_running(response_id):
            return dict(record["response"])
        await self._runs.cancel(response_id)
        stored = await self.store.get(response_id)
        return dict(stored["response"]) if stored else dict(record["response"])

    async def close(self) -> None:
        await self._runs.close()

    def _spawn(self, record: dict[str, Any]) -> None:
        self._runs.start(record["response"]["id"], self._run(record))

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
            if not self._runs.is_cancel_asked(queued["id"]):
                raise  # a shutdown: it runs again on the next start
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
