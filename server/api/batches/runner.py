"""Runs batches: each line through its route, at a low priority, a few at a time.

At most ``batch_concurrency`` lines of a batch are in flight, each a request
queued with ``batch_priority``, so a draining batch leaves the rest of the
batcher's slots (and the head of its queue) to interactive requests. While any
interactive request runs or waits, a batch keeps only one line in flight: on a
CPU every sequence more in a step makes the step slower for all of them, and
the interactive ones are the ones someone watches. A line is
answered when its answer is committed (``server.tasks.batches``); a batch cut
short by a ``kill -9`` or a shutdown resumes when the server starts, running
only the lines not yet answered. Shutting down cancels the lines in flight
without answering them: they run again on the next start. As with tasks
(``server.tasks.store``), a line whose runs were cut short ``task_max_attempts``
times is answered with an error instead of a run: a request that takes the
server down cannot take it down in a loop.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections import deque
from typing import Any

from starlette.applications import Starlette

from server.api.inprocess import call_route
from server.api.runs import Runs
from server.models.registry import ModelRegistry
from server.server_settings import ServerSettings
from server.serving.background import BACKGROUND_PRIORITY
from server.serving.batch_input import BatchLine, parse_batch_input
from server.tasks.batches import FINAL, BatchStore
from server.tasks.files import FileStore

log = logging.getLogger("server.batches")
RETRY_STATUSES = (429, 503)  # busy or a model loading: the line is tried again
RETRY_S = 1.0
GATE_S = 0.05  # how often a held-back worker looks whether interactive requests left


class BatchRunner:
    def __init__(
        self, app: Starlette, batches: BatchStore, files: FileStore, settings: ServerSettings
    ) -> None:
        self.app = app
        self.batches = batches
        self.files = files
        self.settings = settings
        self._runs = Runs()
        self._num_in_flight = 0  # batch lines submitted and not yet answered, all batches

    async def resume(self) -> None:
        """Start-up: run on every batch a dead or stopped process left unfinished."""
        for batch_id in await self.batches.unfinished():
            self.start(batch_id)
        for batch in await self.batches.expire():  # retention: ended batches and their files
            for kind in ("output_file_id", "error_file_id"):
                if batch.get(kind):
                    await self.files.delete(batch[kind])
        await self.files.expire()

    def start(self, batch_id: str) -> None:
        self._runs.start(batch_id, self._run(batch_id))

    async def cancel(self, batch: dict[str, Any]) -> None:
        """Cancel the lines in flight; the batch ends cancelled with what was answered."""
        is_running = self._runs.is_running(batch["id"])
        if not is_running:  # it ended since it was read, or never resumed here
            latest = await self.batches.get(batch["id"])
            if latest is None or latest["status"] in FINAL:
                return
        batch |= {"status": "cancelling", "cancelling_at": int(time.time())}
        await self.batches.save(batch)
        if is_running:
            await self._runs.cancel(batch["id"])
        else:
            await self._finalize(batch["id"], "cancelled")

    async def close(self) -> None:
        """Shutting down: stop every batch; their unanswered lines run on the next start."""
        await self._runs.close()

    async def _run(self, batch_id: str) -> None:
        BACKGROUND_PRIORITY.set(self.settings.batch_priority)  # this task's requests only
        try:
            batch = await self.batches.get(batch_id)
            assert batch is not None
            if batch["status"] in ("in_progress", "validating"):
                ending = await self._run_lines(batch)
                await self._finalize(batch_id, ending)
            else:  # finalizing or cancelling when the process died
                ending = "cancelled" if batch["status"] == "cancelling" else "completed"
                await self._finalize(batch_id, ending)
        except asyncio.CancelledError:
            if not self._runs.is_cancel_asked(batch_id):
                raise  # a shutdown: the batch resumes on the next start
            await self._finalize(batch_id, "cancelled")
        except Exception as exc:  # the input file vanished, or worse: the batch fails alone
            log.exception("batch %s failed", batch_id)
            await self._fail(batch_id, str(exc))

    async def _run_lines(self, batch: dict[str, Any]) -> str:
        """Answer every line not answered yet; the batch's ending status."""
        file = await self.files.get(batch["input_file_id"])
        if file is None:
            raise ValueError(f"its input file {batch['input_file_id']} was deleted")
        lines = parse_batch_input(
            await self.files.content(file),
            endpoint=batch["endpoint"],
            max_lines=self.settings.max_batch_requests,
        )
        answered = await self.batches.answered_lines(batch["id"])
        todo = deque(line for line in lines if line.index not in answered)
        is_expired = False

        async def worker(index: int) -> None:
            nonlocal is_expired
            while todo and not self.app.state.flags.is_draining:
                if index > 0 and self._has_interactive_load():
                    await asyncio.sleep(GATE_S)
                    continue
                if time.time() > batch["expires_at"]:
                    is_expired = True
                    return
                await self._answer(batch["id"], todo.popleft())

        await asyncio.gather(*(worker(i) for i in range(self.settings.batch_concurrency)))
        if self.app.state.flags.is_draining and todo:
            raise asyncio.CancelledError  # stopping: resume on the next start
        return "expired" if is_expired else "completed"

    def _has_interactive_load(self) -> bool:
        """Requests other than this runner's lines are running or waiting."""
        registry: ModelRegistry = self.app.state.registry
        loaded = registry.loaded.values()
        busy = sum(m.batcher.num_running + m.batcher.num_waiting for m in loaded)
        return busy > self._num_in_flight

    async def _answer(self, batch_id: str, line: BatchLine) -> None:
        request_id = "batch_req_" + uuid.uuid4().hex[:24]
        body = line.body
        if line.url == "/v1/responses":  # not kept unless asked: a batch would crowd out
            body = {"store": False} | body  # the conversations clients continue
        attempts = await self.batches.begin(batch_id, line.index)
        if attempts > self.settings.task_max_attempts:
            message = (
                f"failed after {attempts - 1} runs, each cut short by the server process "
                "dying while it ran; it was not run again"
            )
            error = {"code": "server_error", "message": message}
            spent = {"id": request_id, "custom_id": line.custom_id, "response": None}
            await self.batches.answer(batch_id, line.index, False, spent | {"error": error})
            return
        self._num_in_flight += 1
        try:
            while True:
                status, reply = await call_route(self.app, line.url, body, request_id)
                if status not in RETRY_STATUSES or self.app.state.flags.is_draining:
                    break
                await asyncio.sleep(RETRY_S)
        finally:
            self._num_in_flight -= 1
        response = {"status_code": status, "request_id": request_id, "body": reply}
        answer = {"id": request_id, "custom_id": line.custom_id, "response": response}
        await self.batches.answer(batch_id, line.index, status == 200, answer | {"error": None})

    async def _finalize(self, batch_id: str, ending: str) -> None:
        """Write the output and error files from the answers; the batch ends ``ending``."""
        batch = await self.batches.get(batch_id)
        assert batch is not None
        batch |= {"status": "finalizing", "finalizing_at": int(time.time())}
        await self.batches.save(batch)
        suffix = batch_id.removeprefix("batch_")
        for is_ok, kind in ((True, "output"), (False, "error")):
            answers = await self.batches.answers(batch_id, is_ok)
            if answers:
                data = b"\n".join(answers) + b"\n"
                name = f"{batch_id}_{kind}.jsonl"
                file = await self.files.add(name, "batch_output", data, f"file-{kind}-{suffix}")
                batch[f"{kind}_file_id"] = file.id
        batch |= {"status": ending, f"{ending}_at": int(time.time())}
        await self.batches.save(batch)

    async def _fail(self, batch_id: str, reason: str) -> None:
        batch = await self.batches.get(batch_id)
        if batch is None:
            return
        error = {"code": "batch_failed", "message": reason, "param": None, "line": None}
        batch |= {"status": "failed", "failed_at": int(time.time())}
        batch["errors"] = {"object": "list", "data": [error]}
        await self.batches.save(batch)
