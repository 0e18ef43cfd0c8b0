"""A chat request of any API family, run the chat-completions way.

Anthropic's Messages, OpenAI's Responses and Ollama's ``/api/chat`` each turn
their body into a ``ChatCompletionBody``; from there the prompt
(``server.serving.chat.prompt.chat_prompt``), the grammar (tools, ``response_format``), the
sampling parameters and the tool-call parsing are the chat-completions route's
own, so a greedy reply is the same whichever API asked for it. Each family
only shapes what comes out: a whole ``ChatReply``, or text pieces then one.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import AsyncIterator, Callable

from starlette.requests import Request as HttpRequest

from server.api.chat_body import ChatCompletionBody
from server.api.http import client_left, registry_of, result_cache_for
from server.errors import ApiError
from server.prompts import Prompt, encode
from server.serving.chat.prompt import chat_prompt, tool_grammar, trimmable_chat
from server.serving.chat.reasoning import new_parser, reply_setup
from server.serving.chat.reply import ChatReply, ChatRun, reply_of
from server.serving.chat.reply_events import Event, ParsedReply
from server.serving.chat.reply_parser import parse_reply
from server.serving.failures import check_failed, ending_error
from server.serving.prepare import prepare
from server.serving.run import submit, wait_done
from server.serving.streams import Progress, stream_events
from speculative.llama import LlamaModel


def build_body(make: Callable[[], ChatCompletionBody]) -> ChatCompletionBody:
    """A translated body; its checks (tool_choice without tools, ...) are the client's 400."""
    try:
        return make()
    except ValueError as exc:
        raise ApiError(400, str(exc)) from None


async def input_tokens(http: HttpRequest, body: ChatCompletionBody) -> int:
    """Tokens the prompt of ``body`` takes as its chat would run (untrimmed), under one
    lease of the model: what the token-count routes of every family answer."""
    loaded = await registry_of(http).get(body.model)
    try:
        return len(encode(loaded.model, chat_prompt(body, loaded.model), sys.maxsize))
    finally:
        loaded.release()


def chat_render(body: ChatCompletionBody) -> Callable[[LlamaModel], Prompt]:
    """What renders ``body``'s messages with a model's template, under prepare's one lease
    of the model (oldest turns dropped to fit where the body asks)."""
    return functools.partial(trimmable_chat if body.truncate else chat_prompt, body)


async def start_chat(
    http: HttpRequest,
    body: ChatCompletionBody,
    *,
    stream: bool,
    raw_prompt: Prompt | Callable[[LlamaModel], Prompt] | None = None,
    check: Callable[[LlamaModel], None] | None = None,
) -> ChatRun:
    """Prepare and queue ``body`` as /v1/chat/completions would (one choice); with
    ``raw_prompt``, that is the prompt (no chat template): text as it is, or what makes
    it from the model (a fill-in-the-middle prompt). ``check`` raises the client's error
    for what the model cannot do, under the same lease."""
    registry = registry_of(http)
    base = raw_prompt if raw_prompt is not None else chat_render(body)

    def prompt(model: LlamaModel) -> Prompt:
        if check is not None:
            check(model)
        return base(model) if callable(base) else base

    max_tokens = body.output_limit(registry.config.server.max_tokens_limit)
    grammar = tool_grammar(body) or body.grammar_text()
    loaded, request = await prepare(
        registry,
        body.model,
        prompt,
        body.sampling_params(max_tokens),
        body,
        grammar=grammar,
        num_top_logprobs=body.num_top_logprobs,
    )
    http.state.log["generation"] = request
    parser = new_parser(body, *reply_setup(loaded.model, body, request))
    verdict = submit(loaded, request, stream=stream, cache=result_cache_for(http, body))
    return ChatRun(loaded, request, parser, verdict)


async def finish_chat(http: HttpRequest, run: ChatRun) -> ChatReply:
    """Wait for the whole reply; a failure is raised as the ApiError it answers with."""
    request = run.request
    await wait_done(request, left=client_left(http))
    check_failed(request, partial=lambda: {"text": request.text})
    return reply_of(run, parse_reply(request.text, run.parser))


async def stream_chat(run: ChatRun) -> AsyncIterator[Event | ChatReply | ApiError]:
    """The reply's events as they may go out (``reply_parser``: reasoning, content, call
    starts and argument deltas), then the ``ChatReply``, or the ``ApiError`` of a request
    that failed or passed its deadline (every family ends such a stream with its error)."""
    async for item in stream_chat_alive(run, None):
        if not isinstance(item, Progress):
            yield item


async def stream_chat_alive(
    run: ChatRun, keepalive_s: float | None
) -> AsyncIterator[Event | ChatReply | ApiError | Progress]:
    """``stream_chat`` with a ``Progress`` every ``keepalive_s`` until the first text
    (queued, or a long prompt being read) and prompt progress when the body asked for it:
    a family with a keep-alive of its own (Anthropic's ``ping``) sends one for each."""
    parsed = ParsedReply()
    async for piece in stream_events(run.request, keepalive_s):
        if isinstance(piece, Progress):
            yield piece
            continue
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
    yield reply_of(run, parsed)
