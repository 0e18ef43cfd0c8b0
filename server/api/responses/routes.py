"""OpenAI's Responses API: ``POST /v1/responses``, stateless.

Works with the official ``openai`` client's ``client.responses.create``
(Codex CLI speaks only this API). The body becomes a chat-completions body
(``server.api.responses.schemas``) run through ``chat_run``. A stream is the Responses
event sequence (``reply_shape``): ``response.created``, ``response.in_progress``, per output
item ``response.output_item.added`` ... (text: ``content_part.added``,
``output_text.delta``, ``output_text.done``, ``content_part.done``; a call:
``function_call_arguments.delta`` / ``.done``) ``response.output_item.done``,
then ``response.completed`` (``response.incomplete`` at max_output_tokens).
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

from starlette.requests import Request as HttpRequest
from starlette.responses import Response

from server.api.chat_run import build_body, finish_chat, input_tokens, start_chat
from server.api.http import json_response, parse_body, read_json, registry_of
from server.api.responses.background import BackgroundResponses
from server.api.responses.echo import queued
from server.api.responses.reply_shape import ReplyShape, call_item, message_item, reasoning_item
from server.api.responses.schemas import ResponsesBody, refused_field
from server.api.responses.stored import new_record, responses_of, with_history
from server.api.sse import sse_response
from server.errors import ApiError
from server.tasks.responses import ResponseStore


async def create_response(http: HttpRequest) -> Response:
    """OpenAI's Responses API (streamed as Responses events when stream is true); stored
    unless store is false, continued with previous_response_id, queued with background."""
    data = await read_json(http)
    if refusal := refused_field(data):
        raise ApiError(400, refusal)
    assert isinstance(data, dict)  # refused_field refuses anything else
    store = responses_of(http)
    data = await with_history(store, data)
    body = parse_body(ResponsesBody, data, http)
    if body.background:
        return await _start_background(http, body, data)
    run = await start_chat(http, build_body(body.chat), stream=body.stream)
    shape = ReplyShape(body, run)
    shape.keepalive_s = registry_of(http).config.server.stream_keepalive_s
    headers = {"X-Cache": run.verdict}
    if body.stream:
        return sse_response(_stored_events(shape, store, data), headers)
    reply = await finish_chat(http, run)
    has_text = reply.text or not reply.calls
    items = [reasoning_item(shape.reasoning_id, reply.reasoning)] if reply.reasoning else []
    if has_text:
        logprobs = shape.all_logprobs()
        items.append(message_item(shape.message_id, reply.text or "", "completed", logprobs))
    items += [call_item(call) for call in reply.calls]
    response = shape.response(reply, items)
    if response["store"]:
        await store.put(new_record(data, response))
    return json_response(response, headers=headers)


async def count_input_tokens(http: HttpRequest) -> Response:
    """``POST /v1/responses/input_tokens`` (``client.responses.input_tokens.count``): the
    tokens the input takes, a stored conversation continued included."""
    data = await read_json(http)
    if refusal := refused_field(data):
        raise ApiError(400, refusal)
    assert isinstance(data, dict)
    data = await with_history(responses_of(http), data)
    body = parse_body(ResponsesBody, data, http)
    count = await input_tokens(http, build_body(body.chat))
    return json_response({"object": "response.input_tokens", "input_tokens": count})


async def _stored_events(
    shape: ReplyShape, store: ResponseStore, data: dict[str, Any]
) -> AsyncIterator[bytes]:
    async for frame in shape.events():
        yield frame
    if shape.final is not None and shape.final["store"]:
        await store.put(new_record(data, shape.final))


async def _start_background(
    http: HttpRequest, body: ResponsesBody, data: dict[str, Any]
) -> Response:
    if body.stream or body.store is False:
        raise ApiError(400, "background: needs store (not false) and no stream; poll the response")
    model = body.model or registry_of(http).config.server.default_model
    response = queued("resp_" + uuid.uuid4().hex, body, model)
    runner: BackgroundResponses = http.app.state.background_responses
    await runner.start(new_record(data, response), data)
    return json_response(response)
