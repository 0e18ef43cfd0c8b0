"""A chat request of any API family, run the chat-completions way.

Anthropic's Messages, OpenAI's Responses and Ollama's ``/api/chat`` each turn
their body into a ``ChatCompletionBody``; from there the prompt
(``server.serving.chat.prompt.chat_prompt``), the grammar (tools, ``response_format``), the
sampling parameters and the tool-call parsing are the chat-completions route's
own, so a greedy reply is the same whichever API asked for it. Each family
only shapes what comes out: a whole ``ChatReply``, or text pieces then one.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request as HttpRequest

from batching.request import Request
from server.api.chat_body import ChatCompletionBody
from server.errors import ApiError
from server.generation import (
    prepare,
    registry_of,
    result_cache_for,
    stream_text,
    submit,
    wait_done,
)
from server.models.loaded import LoadedModel
from server.prompts import Prompt
from server.serving.chat.prompt import chat_prompt, tool_grammar
from server.serving.chat.reasoning import new_parser, reply_setup
from server.serving.chat.reply_parser import Event, ParsedReply, ReplyParser, parse_reply
from server.serving.chat.tool_calls import ToolCall
from server.serving.failures import check_failed, ending_error
from server.serving.finish import Ending, ending


def build_body(make: Callable[[], ChatCompletionBody]) -> ChatCompletionBody:
    """A translated body; its checks (tool_choice without tools, ...) are the client's 400."""
    try:
        return make()
    except ValueError as exc:
        raise ApiError(400, str(exc)) from None


@dataclass(slots=True)
class ChatRun:
    """A submitted chat request and the parser of its reply (reasoning, content, calls)."""

    loaded: LoadedModel
    request: Request
    parser: ReplyParser
    verdict: str  # X-Cache


@dataclass(slots=True, frozen=True)
class ChatReply:
    """The end of a reply: its content, calls and reasoning (streamed: as sent already)."""

    text: str | None
    calls: list[ToolCall]
    ending: Ending  # each family names it (server.serving.finish.WIRE)
    stop_sequence: str | None  # the stop string that ended it, if one did
    reasoning: str = ""  # the think block, when the model thought


async def start_chat(
    http: HttpRequest, body: ChatCompletionBody, *, stream: bool, raw_prompt: str | None = None
) -> ChatRun:
    """Prepare and queue ``body`` as /v1/chat/completions would (one choice); with
    ``raw_prompt``, that text is the prompt as it is (no chat template)."""
    registry = registry_of(http)
    prompt: Prompt
    if raw_prompt is not None:
        prompt = raw_prompt
    else:
        loaded = await registry.get(body.model)
        try:
            prompt = chat_prompt(body, loaded.model)
        finally:
            loaded.release()
    max_tokens = body.output_limit(registry.config.server.max_tokens_limit)
    grammar = tool_grammar(body) or body.grammar_text()
    loaded, request = await prepare(
        registry, body.model, prompt, body.sampling_params(max_tokens), body, grammar=grammar
    )
    http.state.log["generation"] = request
    parser = new_parser(body, *reply_setup(loaded.model, body, request))
    verdict = submit(loaded, request, stream=stream, cache=result_cache_for(http, body))
    return ChatRun(loaded, request, parser, verdict)


async def finish_chat(http: HttpRequest, run: ChatRun) -> ChatReply:
    """Wait for the whole reply; a failure is raised as the ApiError it answers with."""
    request = run.request
    await wait_done(request, http)
    check_failed(request, partial=lambda: {"text": request.text})
    return _reply(run, parse_reply(request.text, run.parser))


async def stream_chat(run: ChatRun) -> AsyncIterator[Event | ChatReply | ApiError]:
    """The reply's events as they may go out (``reply_parser``: reasoning, content, call
    starts and argument deltas), then the ``ChatReply``, or the ``ApiError`` of a request
    that failed or passed its deadline (every family ends such a stream with its error)."""
    parsed = ParsedReply()
    async for piece in stream_text(run.request):
        events = run.parser.feed(piece)
        parsed.add(events)
        for item in events:
            yield item
    if (error := ending_error(run.request)) is not None:
        yield error
        return
    events = run.parser.finish()
    parsed.add(events)
    for item in events:
        yield item
    yield _reply(run, parsed)


def _reply(run: ChatRun, parsed: ParsedReply) -> ChatReply:
    calls, request = parsed.calls, run.request
    end = ending(request, bool(calls))
    return ChatReply(parsed.text, calls, end, request.stop_word, parsed.reasoning)


def call_arguments(call: ToolCall) -> dict[str, Any]:
    """A call's arguments as the object Anthropic and Ollama send (the JSON text a model
    wrote may be another JSON value)."""
    try:
        value = json.loads(call.arguments)
    except ValueError:
        value = call.arguments
    return value if isinstance(value, dict) else {"arguments": value}


def usage_counts(request: Request) -> tuple[int, int, int]:
    """(prompt tokens computed, prompt tokens from the prefix cache, output tokens)."""
    cached = request.num_cached_tokens
    return request.num_prompt_tokens - cached, cached, request.num_output_tokens
