"""Anthropic's Messages API: ``POST /v1/messages`` and ``/v1/messages/count_tokens``.

Works with the official ``anthropic`` client (and so Claude Code, given a
model name this server knows). The body is translated to a chat-completions
body (``server.api.anthropic.schemas``) and run as one (``chat_run``). A stream is
Anthropic's event sequence: ``message_start``, ``ping``, per block
``content_block_start`` / ``_delta`` / ``_stop``, ``message_delta``,
``message_stop``; a failure mid-stream is an ``error`` event. Errors are
Anthropic's shape, ``{"type": "error", "error": {"type", "message"}}``.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

from starlette.requests import Request as HttpRequest
from starlette.responses import Response

from batching.request import Request
from server.api.anthropic.schemas import CountTokensBody, MessagesBody
from server.api.anthropic.tools import server_tool
from server.api.chat_run import (
    build_body,
    finish_chat,
    input_tokens,
    start_chat,
    stream_chat_alive,
)
from server.api.error_shapes import anthropic_error, shaped_errors
from server.api.http import json_response, read_body, registry_of
from server.api.sse import named_event, sse_response
from server.errors import ApiError
from server.serving.blocks import Blocks
from server.serving.chat.reply import ChatReply, ChatRun, call_arguments, usage_counts
from server.serving.chat.reply_events import CallArgs, CallStart, Content, Reasoning
from server.serving.chat.tool_calls import ToolCall
from server.serving.finish import WIRE, Ending, Family
from server.serving.streams import Progress

TEXT = {"type": "text", "text": ""}


@shaped_errors(anthropic_error)
async def create_message(http: HttpRequest) -> Response:
    """Anthropic's Messages API (streamed with Anthropic's events when stream is true)."""
    body = await read_body(http, MessagesBody, precheck=server_tool)
    run = await start_chat(http, build_body(body.chat), stream=body.stream)
    headers = {"X-Cache": run.verdict}
    if body.stream:
        keepalive_s = registry_of(http).config.server.stream_keepalive_s
        return sse_response(_events(run, keepalive_s), headers)
    reply = await finish_chat(http, run)
    message = _message(run.request, message_id(run.request))
    thinking = [_thinking(reply.reasoning)] if reply.reasoning else []
    text = _text_blocks(reply.text, reply.calls)
    message["content"] = [*thinking, *text, *map(tool_use, reply.calls)]
    return json_response(message | _stop(reply) | {"usage": usage(run.request)}, headers=headers)


@shaped_errors(anthropic_error)
async def count_tokens(http: HttpRequest) -> Response:
    """Tokens the prompt of this Messages request takes (system, messages and tools)."""
    body = await read_body(http, CountTokensBody, precheck=server_tool)
    # the prompt as a chat would run it (a last assistant turn continued), untrimmed
    return json_response({"input_tokens": await input_tokens(http, build_body(body.chat_body))})


def message_id(request: Request) -> str:
    return "msg_" + request.id


def _message(request: Request, id: str) -> dict[str, Any]:
    return {"id": id, "type": "message", "role": "assistant", "model": request.model}


def _text_blocks(text: str | None, calls: list[ToolCall]) -> list[dict[str, Any]]:
    # a reply of calls only has no text block; an empty reply has an empty one
    return [{"type": "text", "text": text or ""}] if text or not calls else []


def _thinking(text: str) -> dict[str, Any]:
    # the signature proves Anthropic's own thinking; a local server has none to give
    return {"type": "thinking", "thinking": text, "signature": ""}


def tool_use(call: ToolCall) -> dict[str, Any]:
    return {"type": "tool_use", "id": "toolu_" + uuid.uuid4().hex[:24], "name": call.name} | {
        "input": call_arguments(call)
    }


def _stop(reply: ChatReply) -> dict[str, Any]:
    word = reply.stop_sequence if reply.ending is Ending.STOP_WORD else None
    return {"stop_reason": WIRE[Family.ANTHROPIC][reply.ending], "stop_sequence": word}


def usage(request: Request) -> dict[str, int]:
    """Anthropic's counts: input_tokens are those computed, the rest came from the cache."""
    computed, cached, output = usage_counts(request)
    return {
        "input_tokens": computed,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": cached,
        "output_tokens": output,
    }


def _event(data: dict[str, Any]) -> bytes:
    return named_event(data["type"], data)


def _start(index: int, block: dict[str, Any]) -> bytes:
    return _event({"type": "content_block_start", "index": index, "content_block": block})


def _blocks() -> Blocks[tuple[str, dict[str, Any]], bytes]:
    """Content blocks, as (their type, the block ``content_block_start`` shows)."""
    return Blocks(lambda b: b[0], lambda index, b: [_start(index, b[1])], _closed)


def _closed(index: int, block: tuple[str, dict[str, Any]]) -> list[bytes]:
    frames = []
    if block[0] == "thinking":  # Anthropic closes a thinking block with its signature
        delta = {"type": "signature_delta", "signature": ""}
        frames.append(_event({"type": "content_block_delta", "index": index, "delta": delta}))
    return [*frames, _event({"type": "content_block_stop", "index": index})]


def _delta(
    blocks: Blocks[tuple[str, dict[str, Any]], bytes],
    kind: str,
    delta: dict[str, Any],
    block: dict[str, Any],
) -> list[bytes]:
    """A delta into the open block of ``kind``, starting one if another is open."""
    frames = blocks.into(kind, lambda: (kind, block))
    return [*frames, _event({"type": "content_block_delta", "index": blocks.index, "delta": delta})]


async def _events(run: ChatRun, keepalive_s: float) -> AsyncIterator[bytes]:
    """Anthropic's events. ``message_start`` goes out at once, as Anthropic sends it, and
    a ``ping`` every ``keepalive_s`` while the request waits or its prompt is read, so a
    client and the proxies between see bytes before the first token. Its usage is the
    prompt before admission (all of it computed); ``message_delta`` has the final split
    between computed and cached tokens."""
    request = run.request
    blocks = _blocks()
    message = _message(request, message_id(request)) | {"content": []}
    message |= {"stop_reason": None, "stop_sequence": None, "usage": usage(request)}
    yield _event({"type": "message_start", "message": message})
    yield _event({"type": "ping"})
    async for item in stream_chat_alive(run, keepalive_s):
        frames: list[bytes] = []
        if isinstance(item, Progress):
            frames = [_event({"type": "ping"})]
        elif isinstance(item, Reasoning):
            delta = {"type": "thinking_delta", "thinking": item.text}
            frames = _delta(blocks, "thinking", delta, _thinking(""))
        elif isinstance(item, Content):
            frames = _delta(blocks, "text", {"type": "text_delta", "text": item.text}, TEXT)
        elif isinstance(item, CallStart):
            block = tool_use(ToolCall(item.name, "{}")) | {"input": {}}
            frames = blocks.start(("tool_use", block))
        elif isinstance(item, CallArgs):
            delta = {"type": "input_json_delta", "partial_json": item.delta}
            frames = _delta(blocks, "tool_use", delta, {})
        elif isinstance(item, ApiError):  # failed, or past its deadline
            yield _event(anthropic_error(item))
            return
        else:
            if blocks.num_started == 0:  # an empty reply still has its (empty) text block
                frames = blocks.start(("text", TEXT))
            frames += blocks.close()
            frames.append(_event({"type": "message_delta", "delta": _stop(item)} | _usage(request)))
            frames.append(_event({"type": "message_stop"}))
        for frame in frames:
            yield frame


def _usage(request: Request) -> dict[str, Any]:
    return {"usage": usage(request)}
