"""Stored responses: ``previous_response_id``, ``GET`` / ``DELETE /v1/responses/{id}``,
``GET /v1/responses/{id}/input_items``.

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


MAX_LIMIT = 100  # OpenAI's bounds for a page of input items
DEFAULT_LIMIT = 20


async def list_input_items(http: HttpRequest) -> Response:
    """The items the response's prompt was made of (earlier turns included), as OpenAI's
    list: ``order`` (``desc``, newest first, by default), ``limit`` (1-100, 20) and
    ``after`` (the id of the last item of the previous page)."""
    record = await record_or_404(http)
    response_id = str(record["response"]["id"])
    items = [input_item(item, response_id, i) for i, item in enumerate(record["items"])]
    query = http.query_params
    order = query.get("order", "desc")
    if order not in ("asc", "desc"):
        raise ApiError(400, f"order: 'asc' or 'desc', got {order!r}")
    try:
        limit = int(query.get("limit", DEFAULT_LIMIT))
    except ValueError:
        limit = 0
    if not 1 <= limit <= MAX_LIMIT:
        raise ApiError(400, f"limit: a whole number from 1 to {MAX_LIMIT}")
    if order == "desc":
        items.reverse()
    start = 0
    if (after := query.get("after")) is not None:
        ids = [item["id"] for item in items]
        if after not in ids:
            raise ApiError(400, f"after: no input item {after!r} in response {response_id}")
        start = ids.index(after) + 1
    page = items[start : start + limit]
    return json_response(
        {
            "object": "list",
            "data": page,
            "first_id": page[0]["id"] if page else None,
            "last_id": page[-1]["id"] if page else None,
            "has_more": start + limit < len(items),
        }
    )


def input_item(item: object, response_id: str, index: int) -> dict[str, Any]:
    """An input item as OpenAI lists it: a message's text as an ``input_text`` part, and an
    id (an item sent without one gets one made from the response's and its place)."""
    shaped: dict[str, Any] = dict(item) if isinstance(item, dict) else {"content": str(item)}
    if "role" in shaped:
        shaped.setdefault("type", "message")
    if shaped.get("type") == "message":
        if isinstance(content := shaped.get("content"), str):
            shaped["content"] = [{"type": "input_text", "text": content}]
        shaped.setdefault("status", "completed")
    shaped.setdefault("id", f"msg_{response_id.removeprefix('resp_')}_{index}")
    return shaped


async def record_or_404(http: HttpRequest) -> dict[str, Any]:
    response_id = http.path_params["response_id"]
    record = await responses_of(http).get(response_id)
    if record is None:
        raise ApiError(
            404, f"no stored response {response_id!r}; responses are stored unless store is false"
        )
    return record
