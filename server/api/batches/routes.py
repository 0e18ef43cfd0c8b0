"""OpenAI's Batch API: ``/v1/batches`` create, list, get, cancel (``runner`` runs them)."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request as HttpRequest
from starlette.responses import Response

from server.api.batches.runner import BatchRunner
from server.api.batches.schemas import BatchBody, new_batch
from server.api.http import json_response, query_int, read_body
from server.errors import ApiError
from server.serving.batch_input import parse_batch_input
from server.tasks.batches import FINAL

MAX_PER_PAGE = 100


def runner_of(http: HttpRequest) -> BatchRunner:
    runner: BatchRunner = http.app.state.batch_runner
    return runner


async def create_batch(http: HttpRequest) -> Response:
    """Create a batch from an uploaded file; its requests run in the background."""
    body = await read_body(http, BatchBody)
    runner = runner_of(http)
    file = await runner.files.get(body.input_file_id)
    if file is None:
        raise ApiError(404, f"no file {body.input_file_id!r}; upload it with POST /v1/files")
    if file.purpose != "batch":
        why = f"has purpose {file.purpose!r}, not batch"
        raise ApiError(400, f"input_file_id: file {file.id} {why}")
    try:
        lines = parse_batch_input(
            await runner.files.content(file),
            endpoint=body.endpoint,
            max_lines=runner.settings.max_batch_requests,
        )
    except ValueError as exc:
        raise ApiError(400, f"input_file_id: file {file.id}: {exc}") from None
    batch = new_batch(body, len(lines))
    await runner.batches.save(batch)
    runner.start(batch["id"])
    return json_response(batch)


async def get_batch(http: HttpRequest) -> Response:
    """A batch: its status, counts and, once it ended, its output and error files."""
    return json_response(await _batch_or_404(http))


async def list_batches(http: HttpRequest) -> Response:
    """Batches, newest first (after, limit)."""
    limit = query_int(http, "limit", 20, 1, MAX_PER_PAGE)
    after = http.query_params.get("after")
    batches = await runner_of(http).batches.newest_first(after, limit + 1)
    data = batches[:limit]
    first, last = (data[0]["id"], data[-1]["id"]) if data else (None, None)
    body = {"object": "list", "data": data, "first_id": first, "last_id": last}
    return json_response(body | {"has_more": len(batches) > limit})


async def cancel_batch(http: HttpRequest) -> Response:
    """Cancel a batch: requests in flight are cancelled; what was answered is kept."""
    batch = await _batch_or_404(http)
    if batch["status"] in FINAL:
        raise ApiError(409, f"batch {batch['id']} already ended ({batch['status']})")
    if batch["status"] != "cancelling":
        await runner_of(http).cancel(batch)
    return json_response(await _batch_or_404(http))


async def _batch_or_404(http: HttpRequest) -> dict[str, Any]:
    batch_id = http.path_params["batch_id"]
    batch = await runner_of(http).batches.get(batch_id)
    if batch is None:
        raise ApiError(404, f"no batch {batch_id!r}; batch ids come from POST /v1/batches")
    return batch
