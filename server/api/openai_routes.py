"""OpenAI-compatible routes: chat completions, completions, models.

Works with the official ``openai`` client. Streams are server-sent events of
``chat.completion.chunk`` / ``text_completion`` objects, then ``[DONE]``.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Sequence
from typing import Any

from starlette.requests import Request as HttpRequest
from starlette.responses import Response
from starlette.routing import Route

from batching.request import Request, RequestStatus
from server.api.chat_tools import chat_prompt, tool_grammar, tool_names
from server.api.logprobs import LogprobCursor
from server.api.openai_schemas import (
    ChatCompletionBody,
    CompletionBody,
    SamplingFields,
    unsupported_message,
)
from server.api.routes import json_response, read_body
from server.api.sse import DONE, event, sse_response
from server.generation import (
    check_failed,
    failure_error,
    prepare,
    registry_of,
    result_cache_for,
    speculation_counts,
    stream_text,
    submit,
    usage,
    wait_done,
)
from server.tool_calls import ContentFilter, ToolCall, parse_tool_calls

DEFAULT_CHAT_MAX_TOKENS = 512


async def chat_completions(http: HttpRequest) -> Response:
    body = await read_body(http, ChatCompletionBody, precheck=unsupported_message)
    max_tokens = body.max_completion_tokens or body.max_tokens or DEFAULT_CHAT_MAX_TOKENS
    params = body.sampling_params(max_tokens)
    registry = registry_of(http)
    prompt = chat_prompt(body, (await registry.get(body.model)).model)
    loaded, request = await prepare(
        registry,
        body.model,
        prompt,
        params,
        body,
        grammar=tool_grammar(body) or body.grammar_text(),
        num_top_logprobs=body.num_top_logprobs,
    )
    shape = _Shape("chatcmpl-", "chat.completion", request, LogprobCursor(loaded.model, request))
    shape.tool_names = tool_names(body)
    shape.max_calls = 1 if body.parallel_tool_calls is False else None
    return await _respond(http, loaded, request, body, shape)


async def completions(http: HttpRequest) -> Response:
    body = await read_body(http, CompletionBody, precheck=unsupported_message)
    params = body.sampling_params(body.max_tokens)
    loaded, request = await prepare(
        registry_of(http),
        body.model,
        body.text,
        params,
        body,
        grammar=body.grammar_text(),
        num_top_logprobs=body.num_top_logprobs,
    )
    shape = _Shape("cmpl-", "text_completion", request, LogprobCursor(loaded.model, request))
    return await _respond(http, loaded, request, body, shape)


async def list_models(http: HttpRequest) -> Response:
    registry = registry_of(http)
    models = [_model_card(http, name) for name in registry.config.models]
    return json_response({"object": "list", "data": models})


async def get_model(http: HttpRequest) -> Response:
    name = registry_of(http).resolve_name(http.path_params["model"])  # 404 for unknown
    return json_response(_model_card(http, name))


def _model_card(http: HttpRequest, name: str) -> dict[str, Any]:
    loaded = name in registry_of(http).loaded
    return {"id": name, "object": "model", "created": 0, "owned_by": "local", "loaded": loaded}


class _Shape:
    """OpenAI's reply objects for one request, whole or as stream chunks."""

    def __init__(self, prefix: str, kind: str, request: Request, logprobs: LogprobCursor) -> None:
        self.id = prefix + request.id
        self.kind = kind
        self.chat = kind.startswith("chat")
        self.logprobs = logprobs
        self.request = request
        self.created = int(time.time())
        self.tool_names: set[str] | None = None  # tools whose calls are parsed from the reply
        self.max_calls: int | None = None  # parallel_tool_calls: false keeps the first

    def envelope(self, choice: dict[str, Any], *, chunk: bool) -> dict[str, Any]:
        kind = self.kind + ".chunk" if chunk and self.chat else self.kind
        return {
            "id": self.id,
            "object": kind,
            "created": self.created,
            "model": self.request.model,
            "choices": [choice],
        }

    def choice(
        self, text: str | None, finish: str | None, *, chunk: bool, calls: Sequence[ToolCall] = ()
    ) -> dict[str, Any]:
        """A choice; with logprobs asked for, it carries those of tokens not yet sent."""
        if not self.chat:
            logprobs = self.logprobs.completion()
            return {"index": 0, "text": text or "", "logprobs": logprobs, "finish_reason": finish}
        logprobs = self.logprobs.chat()
        if not chunk:
            message: dict[str, Any] = {"role": "assistant", "content": text}
            if calls:
                message["tool_calls"] = [call.as_openai() for call in calls]
            return {"index": 0, "message": message, "logprobs": logprobs, "finish_reason": finish}
        delta: dict[str, Any] = {} if text is None else {"content": text}
        if calls:
            delta["tool_calls"] = [call.as_openai(i) for i, call in enumerate(calls)]
        return {"index": 0, "delta": delta, "logprobs": logprobs, "finish_reason": finish}

    def usage(self) -> dict[str, Any]:
        return usage(self.request)

    def finish_reason(self, calls: Sequence[ToolCall] = ()) -> str:
        # "cancelled" and "error" never reach a client that is still listening
        reason = str(self.request.finish_reason)
        if reason in ("length", "timeout"):
            return reason
        return "tool_calls" if calls else "stop"

    def split(self, text: str) -> tuple[str | None, list[ToolCall]]:
        """The reply's content and its tool calls."""
        if self.tool_names is None:
            return text, []
        content, calls = parse_tool_calls(text, self.tool_names)
        return content, calls[: self.max_calls]


async def _respond(
    http: HttpRequest, loaded: Any, request: Request, body: SamplingFields, shape: _Shape
) -> Response:
    http.state.log["generation"] = request
    verdict = submit(loaded, request, stream=body.stream, cache=result_cache_for(http, body))
    headers = {"X-Cache": verdict}
    if body.stream:
        return sse_response(_chunks(shape, body.include_usage), headers)
    await wait_done(request, http)
    check_failed(request, partial=lambda: {"text": request.text, "usage": shape.usage()})
    text, calls = shape.split(request.text)
    choice = shape.choice(text, shape.finish_reason(calls), chunk=False, calls=calls)
    reply = shape.envelope(choice, chunk=False)
    extras = {
        "usage": shape.usage(),
        "timings": request.timings(),
        "speculative": speculation_counts(request),
    }
    return json_response(reply | extras, headers=headers)


async def _chunks(shape: _Shape, include_usage: bool) -> AsyncIterator[bytes]:
    def chunk(text: str | None, finish: str | None) -> bytes:
        return event(shape.envelope(shape.choice(text, finish, chunk=True), chunk=True))

    if shape.chat:  # the first chat chunk announces the role
        first = shape.choice(None, None, chunk=True)
        first["delta"] = {"role": "assistant", "content": ""}
        yield event(shape.envelope(first, chunk=True))
    held = ContentFilter(shape.tool_names) if shape.tool_names is not None else None
    async for piece in stream_text(shape.request):
        if held is not None:
            piece = held.feed(piece)
        if piece:
            yield chunk(piece, None)
    if shape.request.status is RequestStatus.FAILED:
        yield event(failure_error(shape.request).body())
    else:
        rest, calls = held.finish() if held is not None else ("", [])
        calls = calls[: shape.max_calls]
        if rest or calls:
            choice = shape.choice(rest or None, None, chunk=True, calls=calls)
            yield event(shape.envelope(choice, chunk=True))
        yield chunk(None if shape.chat else "", shape.finish_reason(calls))
        if include_usage:
            yield event(
                {
                    **shape.envelope(shape.choice(None, None, chunk=True), chunk=True),
                    "choices": [],
                    "usage": shape.usage(),
                    "timings": shape.request.timings(),
                }
            )
    yield DONE


BODIES = {"/v1/chat/completions": ChatCompletionBody, "/v1/completions": CompletionBody}
ROUTES = [
    Route("/v1/chat/completions", chat_completions, methods=["POST"]),
    Route("/v1/completions", completions, methods=["POST"]),
    Route("/v1/models", list_models, methods=["GET"]),
    Route("/v1/models/{model:path}", get_model, methods=["GET"]),
]
