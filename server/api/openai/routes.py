"""OpenAI-compatible routes: chat completions, completions, models.

Works with the official ``openai`` client. Streams are server-sent events of
``chat.completion.chunk`` / ``text_completion`` objects, then ``[DONE]``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

from starlette.requests import Request as HttpRequest
from starlette.responses import Response

from batching.request import Request, SamplingParams
from server.api.chat_body import ChatCompletionBody, unsupported_message
from server.api.chat_run import chat_render, input_tokens
from server.api.http import client_left, json_response, read_body, registry_of, result_cache_for
from server.api.openai.reply_shape import ReplyShape
from server.api.openai.schemas import CompletionBody
from server.api.sampling_fields import SamplingFields
from server.api.sse import DONE, event, progress_frame, sse_response
from server.errors import ApiError
from server.prompts import Prompt
from server.serving.chat.prompt import tool_grammar
from server.serving.chat.reasoning import new_parser, reply_setup
from server.serving.chat.reply_parser import ReplyParser
from server.serving.failures import check_failed, ending_error
from server.serving.infill import infill_builder
from server.serving.limits import max_output_tokens
from server.serving.logprobs import LogprobCursor
from server.serving.prepare import choices_of, prepare
from server.serving.run import cancel_all, speculation_counts, submit, usage, wait_done
from server.serving.streams import Progress, merged_streams
from server.serving.timings import timings
from speculative.llama import LlamaModel


async def chat_completions(http: HttpRequest) -> Response:
    body = await read_body(http, ChatCompletionBody, precheck=unsupported_message)
    registry = registry_of(http)
    max_tokens = body.output_limit(registry.config.server.max_tokens_limit)
    params = body.sampling_params(max_tokens)
    return await _complete(http, body, chat_render(body), params, chat=True)


async def chat_input_tokens(http: HttpRequest) -> Response:
    """llama-server's ``/chat/completions/input_tokens``: the tokens a chat's prompt takes."""
    body = await read_body(http, ChatCompletionBody, precheck=unsupported_message)
    return json_response({"input_tokens": await input_tokens(http, body)})


async def completions(http: HttpRequest) -> Response:
    body = await read_body(http, CompletionBody, precheck=unsupported_but_suffix)
    config = registry_of(http).config
    server_limit = config.server.max_tokens_limit
    max_tokens = max_output_tokens(
        server_limit, body.n_predict_tokens(server_limit), body.max_tokens
    )
    infill = body.infill()
    prompt: Prompt | Callable[[LlamaModel], Prompt] = (
        body.prompt_value() if infill is None else infill_builder(config, body.model, infill, 0)
    )
    return await _complete(http, body, prompt, body.sampling_params(max_tokens), chat=False)


def unsupported_but_suffix(data: object) -> str | None:
    """/v1/completions takes a suffix (fill in the middle); chat does not."""
    return unsupported_message(
        {k: v for k, v in data.items() if k != "suffix"} if isinstance(data, dict) else data
    )


async def _complete(
    http: HttpRequest,
    body: ChatCompletionBody | CompletionBody,
    prompt: Prompt | Callable[[LlamaModel], Prompt],
    params: SamplingParams,
    *,
    chat: bool,
) -> Response:
    grammar = tool_grammar(body) if isinstance(body, ChatCompletionBody) else None
    loaded, request = await prepare(
        registry_of(http),
        body.model,
        prompt,
        params,
        body,
        grammar=grammar or body.grammar_text(),
        num_top_logprobs=body.num_top_logprobs,
    )
    if body.n > loaded.batcher.max_batch_size:
        raise ApiError(
            400,
            f"n: at most {loaded.batcher.max_batch_size} choices (the model's max_batch_size), "
            f"got {body.n}",
        )
    requests = [request, *choices_of(request, body.n)]
    prefix, kind = ("chatcmpl-", "chat.completion") if chat else ("cmpl-", "text_completion")
    parsers: list[ReplyParser | None] = [None] * len(requests)
    if isinstance(body, ChatCompletionBody):  # each choice its own budget and parser
        parsers = [new_parser(body, *reply_setup(loaded.model, body, r)) for r in requests]
    shapes = [
        ReplyShape(prefix + request.id, kind, r, LogprobCursor(loaded.model, r), index=i, parser=p)
        for i, (r, p) in enumerate(zip(requests, parsers, strict=True))
    ]
    return await _respond(http, loaded, body, shapes)


async def list_models(http: HttpRequest) -> Response:
    registry = registry_of(http)
    models = [_model_card(http, name) for name in registry.config.models]
    return json_response({"object": "list", "data": models})


async def get_model(http: HttpRequest) -> Response:
    name = registry_of(http).resolve_name(http.path_params["model"])  # 404 for unknown
    return json_response(_model_card(http, name))


def _model_card(http: HttpRequest, name: str) -> dict[str, Any]:
    """OpenAI's model object, plus whether it is in memory, until when, and how much."""
    loaded = registry_of(http).loaded.get(name)
    return {
        "id": name,
        "object": "model",
        "created": 0,
        "owned_by": "local",
        "aliases": registry_of(http).config.models[name].aliases,
        "loaded": loaded is not None,
        "expires_at": loaded.expires_at() if loaded is not None else None,
        "memory_bytes": loaded.footprint.total_bytes if loaded is not None else None,
    }


async def _respond(
    http: HttpRequest, loaded: Any, body: SamplingFields, shapes: list[ReplyShape]
) -> Response:
    requests = [shape.request for shape in shapes]
    http.state.log["generation"] = requests[0]
    # the other choices copy the first one's prompt KV: the result cache would answer
    # it alone, and they would compute the prompt again
    cache = result_cache_for(http, body) if len(requests) == 1 else None
    verdicts = []
    try:
        for request in requests:
            verdicts.append(submit(loaded, request, stream=body.stream, cache=cache))
    except ApiError:  # a full queue: the choices already queued have no one to answer
        cancel_all(requests[: len(verdicts)])
        raise
    headers = {"X-Cache": verdicts[0]}
    if body.stream:
        keepalive_s = registry_of(http).config.server.stream_keepalive_s
        frames = _chunks(shapes, body.include_usage, body.timings_per_token, keepalive_s)
        return sse_response(frames, headers)
    await wait_done(*requests, left=client_left(http))
    for request in requests:  # a 504's partial output is the first choice's
        check_failed(request, partial=lambda: {"text": requests[0].text, "usage": usage(*requests)})
    reply = shapes[0].envelope([s.whole() for s in shapes], chunk=False)
    reply_text = requests[0].text
    extras: dict[str, Any] = {
        "usage": usage(*requests),
        "timings": requests[0].timings(),
        "speculative": speculation_counts(requests[0]),
    }
    verbose = body.verbose
    if verbose is None:
        verbose = registry_of(http).config.server.verbose_replies
    if verbose:  # llama-server's debugging aid: what the template made of the messages
        prompt = b"".join(loaded.model.piece(t, special=True) for t in requests[0].prompt_tokens)
        extras["__verbose"] = {"prompt": prompt.decode(errors="replace"), "content": reply_text}
    return json_response(reply | extras, headers=headers)


async def _chunks(
    shapes: list[ReplyShape], include_usage: bool, timings_per_token: bool, keepalive_s: float
) -> AsyncIterator[bytes]:
    first = shapes[0]

    def chunk(
        shape: ReplyShape, text: str | None, finish: str | None, delta: dict[str, Any] | None = None
    ) -> bytes:
        choice = shape.choice(text, finish, chunk=True, delta=delta)
        body = first.envelope([choice], chunk=True)
        if timings_per_token:  # llama.cpp's extension: the timings so far, every chunk
            body["timings"] = _timings(shape.request)
        return event(body)

    if first.chat:  # the first chat chunk of each choice announces the role
        for shape in shapes:
            announce = shape.choice(None, None, chunk=True)
            # content null, as llama-server sends it (its clients and tests check that no
            # delta carries empty content); OpenAI's "" reads the same to its SDKs
            announce["delta"] = {"role": "assistant", "content": None}
            yield event(first.envelope([announce], chunk=True))
    async for index, piece in merged_streams([s.request for s in shapes], keepalive_s):
        shape = shapes[index]
        if isinstance(piece, Progress):
            yield progress_frame(shape.request, piece, first.envelope([], chunk=True))
        elif piece is None and (error := ending_error(shape.request)) is not None:
            yield event(error.body())  # a deadline too: the text sent is not the whole reply
            break
        elif not shape.chat:
            if piece is None:
                yield chunk(shape, "", shape.finish_reason())
            elif piece:
                yield chunk(shape, piece, None)
        else:
            for delta in shape.stream_deltas(piece):
                yield chunk(shape, None, None, delta)
            if piece is None:
                yield chunk(shape, None, shape.finish_reason(bool(shape.calls)))
    else:
        if include_usage:
            requests = [s.request for s in shapes]
            yield event(
                {
                    **first.envelope([], chunk=True),
                    "usage": usage(*requests),
                    "timings": _timings(first.request),
                }
            )
    yield DONE


def _timings(request: Request) -> dict[str, Any]:
    """This server's timings and llama-server's (prompt_per_second, predicted_n, ...)."""
    return request.timings() | timings(request)
