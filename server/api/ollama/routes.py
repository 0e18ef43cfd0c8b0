"""Ollama's generation routes: ``POST /api/chat`` and ``POST /api/generate``.

Works with the official ``ollama`` client and LangChain's ``ChatOllama``.
Each body becomes a chat-completions body (``server.api.ollama.schemas``) run through
``chat_run``; a stream (Ollama's default) is NDJSON, one object a line, the
last one ``done: true`` with the counts and durations (nanoseconds). A request
without messages (or with an empty prompt) loads the model, and with
``keep_alive: 0`` unloads it, as Ollama does. Errors are ``{"error": "..."}``.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from typing import Any

import orjson
from starlette.requests import Request as HttpRequest
from starlette.responses import Response, StreamingResponse

from batching.request import Request
from server.api.chat_run import build_body, finish_chat, start_chat, stream_chat
from server.api.error_shapes import ollama_error, shaped_errors
from server.api.http import json_response, read_body, registry_of
from server.api.ollama.schemas import GenerationFields, OllamaChatBody, OllamaGenerateBody
from server.duration import parse_keep_alive
from server.errors import ApiError
from server.prompts import Prompt
from server.serving.chat.reply import ChatReply, call_arguments
from server.serving.chat.reply_events import Content, Reasoning, think_tags
from server.serving.chat.tool_calls import ToolCall
from server.serving.finish import WIRE, Family
from server.serving.infill import InfillInput, infill_builder
from speculative.llama import LlamaModel

NDJSON = "application/x-ndjson"


def now_rfc3339() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


def ndjson_response(lines: AsyncIterator[dict[str, Any]], headers: dict[str, str]) -> Response:
    async def encoded() -> AsyncIterator[bytes]:
        async for line in lines:
            yield orjson.dumps(line) + b"\n"

    return StreamingResponse(encoded(), media_type=NDJSON, headers=headers)


@shaped_errors(ollama_error)
async def chat(http: HttpRequest) -> Response:
    """Ollama's chat (NDJSON lines unless stream is false)."""
    body = await read_body(http, OllamaChatBody)
    if not body.messages:
        return await _load_or_unload(http, body, {"message": {"role": "assistant", "content": ""}})
    return await _run(http, body, None, _chat_fields)


@shaped_errors(ollama_error)
async def generate(http: HttpRequest) -> Response:
    """Ollama's completion of a prompt (NDJSON lines unless stream is false)."""
    body = await read_body(http, OllamaGenerateBody)
    if not body.prompt:
        return await _load_or_unload(http, body, {"response": ""})
    registry = registry_of(http)
    settings = registry.config.models[registry.resolve_name(body.model)]
    raw = body.raw or not settings.use_chat_template
    if (raw or body.suffix is not None) and body.system is not None:
        raise ApiError(400, "system: a raw prompt, a suffix (or no chat template) takes none")
    if body.suffix is not None:  # fill in the middle, as Ollama's FIM templates lay it out
        infill = InfillInput(prefix=body.prompt, suffix=body.suffix, repo_level=False)
        build = infill_builder(registry.config, body.model, infill, 0)  # no files to budget
        return await _run(http, body, build, _generate_fields)
    return await _run(http, body, body.prompt if raw else None, _generate_fields)


Fields = Callable[[str | None, list[ToolCall], str], dict[str, Any]]


def _chat_fields(text: str | None, calls: list[ToolCall], thinking: str = "") -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": text or ""}
    if thinking:
        message["thinking"] = thinking
    if calls:
        message["tool_calls"] = [
            {"function": {"name": c.name, "arguments": call_arguments(c)}} for c in calls
        ]
    return {"message": message}


def _generate_fields(text: str | None, calls: list[ToolCall], thinking: str = "") -> dict[str, Any]:
    return {"response": text or ""} | ({"thinking": thinking} if thinking else {})


async def _run(
    http: HttpRequest,
    body: OllamaChatBody | OllamaGenerateBody,
    raw_prompt: Prompt | Callable[[LlamaModel], Prompt] | None,
    fields: Fields,
) -> Response:
    def can_think(model: LlamaModel) -> None:  # Ollama's answer to think on a model that cannot
        if body.think not in (None, False) and think_tags(model.template_text) is None:
            raise ApiError(400, f"think: model {body.model!r} does not support thinking")

    chat = build_body(body.chat)
    run = await start_chat(http, chat, stream=body.stream, raw_prompt=raw_prompt, check=can_think)
    headers = {"X-Cache": run.verdict}
    head = {"model": run.request.model}
    if not body.stream:
        reply = await finish_chat(http, run)
        line = head | {"created_at": now_rfc3339()}
        line |= fields(reply.text, reply.calls, reply.reasoning)
        return json_response(line | _done(run.request, reply), headers=headers)

    async def lines() -> AsyncIterator[dict[str, Any]]:
        async for item in stream_chat(run):
            if isinstance(item, ApiError):
                yield ollama_error(item)
                return
            created = {"created_at": now_rfc3339()}
            if isinstance(item, Content | Reasoning):
                is_thinking = isinstance(item, Reasoning)
                pair = ("", item.text) if is_thinking else (item.text, "")
                yield head | created | fields(pair[0], [], pair[1]) | {"done": False}
            elif isinstance(item, ChatReply):
                if item.calls:  # Ollama sends a call whole, once it is complete
                    yield head | created | fields(None, item.calls, "") | {"done": False}
                yield head | created | fields(None, [], "") | _done(run.request, item)
            # call starts and argument deltas: Ollama's API has no partial calls

    return ndjson_response(lines(), headers)


def _done(request: Request, reply: ChatReply) -> dict[str, Any]:
    """The last line's fields: why it ended, token counts, durations in nanoseconds."""

    def ns(start: float | None, end: float | None) -> int:
        return 0 if start is None or end is None else round((end - start) * 1e9)

    ended = request.finished_at or time.monotonic()
    return {
        "done": True,
        "done_reason": WIRE[Family.OLLAMA][reply.ending],
        "total_duration": ns(request.created_at, ended),
        "load_duration": 0,
        "prompt_eval_count": request.num_prompt_tokens,
        "prompt_eval_duration": ns(request.started_at, request.first_token_at),
        "eval_count": request.num_output_tokens,
        "eval_duration": ns(request.first_token_at, ended),
    }


async def _load_or_unload(
    http: HttpRequest, body: GenerationFields, fields: dict[str, Any]
) -> Response:
    registry = registry_of(http)
    name = registry.resolve_name(body.model)
    started = time.monotonic()
    keep_alive = body.keep_alive
    if keep_alive is not None and parse_keep_alive(keep_alive) == 0:
        await registry.unload(name)
        reason = "unload"
    else:
        await registry.load(name, keep_alive)
        reason = "load"
    took = round((time.monotonic() - started) * 1e9)
    line = {"model": name, "created_at": now_rfc3339()} | fields
    return json_response(line | {"done": True, "done_reason": reason, "load_duration": took})
