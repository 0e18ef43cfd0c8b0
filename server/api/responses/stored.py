"""Stored responses: ``previous_response_id``, ``GET`` / ``DELETE /v1/responses/{id}``.

A stored record holds the conversation as input items (``items``: every earlier
turn and this request's input; instructions are not carried, as OpenAI does not)
and the Response. Continuing one puts ``items`` and the earlier ``output`` before
the new input, which is exactly the input a stateless client would resend, so
the prompt (and the greedy text) is the same, and its beginning, already in the
prefix cache from the earlier turn, is reused (``cached_tokens``).
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request as HttpRequest
from starlette.responses import Response

from server.api.http import json_response
from server.errors import ApiError
from server.tasks.responses import ResponseStore


def responses_of(http: HttpRequest) -> ResponseStore:
    store: ResponseStore = http.app.state.responses
    return store


def as_items(value: object) -> list[object]:
    """``input`` as a list of items (a text is one user message)."""
    if isinstance(value, str):
        return [{"type": "message", "role": "user", "content": value}]
    return list(value) if isinstance(value, list) else []


async def with_history(store: ResponseStore, data: dict[str, Any]) -> dict[str, Any]:
    """The body with the stored conversation of ``previous_response_id`` before its input."""
    previous_id = data.get("previous_response_id")
    if previous_id is None:
        return data
    if not isinstance(previous_id, str):
        raise ApiError(400, "previous_response_id: expected a response id (a string)")
    record = await store.get(previous_id)
    if record is None:
        raise ApiError(
            400,
            f"previous_response_id: no stored response {previous_id!r} (deleted, expired, "
            "or made with store false); send the whole conversation as input",
        )
    response = record["response"]
    if response["status"] in ("queued", "in_progress"):
        raise ApiError(400, f"previous_response_id: {previous_id} has not finished; poll it")
    history = [*record["items"], *response["output"]]
    return data | {"input": history + as_items(data.get("input", ""))}


def new_record(data: dict[str, Any], response: dict[str, Any]) -> dict[str, Any]:
    return {"response": response, "items": as_items(data.get("input", ""))}


async def get_response(http: HttpRequest) -> Response:
    """A stored response (a background one: its state now)."""
    return json_response((await record_or_404(http))["response"])


async def delete_response(http: HttpRequest) -> Response:
    """Delete a stored response (a background one still running is cancelled first)."""
    record = await record_or_404(http)
    response_id = record["response"]["id"]
    await http.app.state.background_responses.cancel(record)
    await responses_of(http).delete(response_id)
    return json_response({"id": response_id, "object": "response", "deleted": True})


async def cancel_response(http: HttpRequest) -> Response:
    """Cancel a background response; a finished one is returned as it is."""
    record = await record_or_404(http)
    if not record["response"].get("background"):
        raise ApiError(400, "only a background response can be cancelled")
    return json_response(await http.app.state.background_responses.cancel(record))


async def record_or_404(http: HttpRequest) -> dict[str, Any]:
    response_id = http.path_params["response_id"]
    record = await responses_of(http).get(response_id)
    if record is None:
        raise ApiError(
            404, f"no stored response {response_id!r}; responses are stored unless store is false"
        )
    return record
