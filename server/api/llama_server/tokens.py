"""``/tokenize`` and ``/detokenize``, shaped as llama-server's.

``/tokenize`` takes ``content`` (a string, or a list mixing strings and token
ids, as llama-server's ``tokenize_mixed``), ``add_special`` (BOS/EOS as the
model wants; default false) and ``parse_special`` (markup such as
``<|im_start|>`` becomes control tokens; default true). ``with_pieces`` gives
``[{"id", "piece"}]`` instead of ids: a piece is its text, or its bytes as a
list of integers when they are not valid UTF-8 on their own. ``/detokenize``
joins the pieces of ``tokens``, control tokens included, as llama-server does.
``model`` (an extension: this server holds several) picks the vocabulary.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import anyio.to_thread
from starlette.requests import Request as HttpRequest
from starlette.responses import Response

from server.api.chat_body import ChatCompletionBody, unsupported_message
from server.api.fields import MAX_PROMPT_CHARS
from server.api.http import json_response, read_body, registry_of
from server.errors import ApiError
from server.prompts import check_ids, encode, encode_mixed
from server.schema import spec
from server.serving.chat.prompt import chat_prompt
from server.serving.prepare import INLINE_TOKENIZE_CHARS, leased_model
from speculative.llama import LlamaModel, ModelClosedError

MAX_TOKENS = 1_000_000


@dataclass(slots=True, frozen=True)
class TokenizeBody:
    """POST /tokenize"""

    content: str | list[str | int] = spec(
        doc="text, or a list of texts and token ids", max_length=MAX_PROMPT_CHARS
    )
    add_special: bool = spec(False, doc="add BOS/EOS as the model's tokenizer wants")
    parse_special: bool = spec(True, doc="turn control-token markup into control tokens")
    with_pieces: bool = spec(False, doc='return [{"id", "piece"}] instead of ids')
    model: str | None = spec(None, doc="a configured model (its vocabulary); default if omitted")


@dataclass(slots=True, frozen=True)
class DetokenizeBody:
    """POST /detokenize"""

    tokens: list[int] = spec(doc="token ids", max_length=MAX_TOKENS)
    model: str | None = spec(None, doc="a configured model (its vocabulary); default if omitted")


async def tokenize(http: HttpRequest) -> Response:
    """Text to token ids with the model's tokenizer (llama-server's /tokenize)."""
    body = await read_body(http, TokenizeBody)
    async with leased_model(registry_of(http), body.model) as model:
        return await _tokenize(body, model)


async def _tokenize(body: TokenizeBody, model: LlamaModel) -> Response:
    parts: list[str | int] = [body.content] if isinstance(body.content, str) else body.content
    check_ids(parts, model, "content")

    def work() -> list[int]:
        return encode_mixed(model, parts, body.add_special, body.parse_special)

    size = sum(len(p) for p in parts if isinstance(p, str))
    try:
        tokens = work() if size <= INLINE_TOKENIZE_CHARS else await anyio.to_thread.run_sync(work)
    except ModelClosedError as exc:  # a reload replaced the model while we held it
        raise ApiError(503, str(exc), {"Retry-After": "1"}) from None
    if not body.with_pieces:
        return json_response({"tokens": tokens})
    return json_response({"tokens": [piece_entry(model, t) for t in tokens]})


async def detokenize(http: HttpRequest) -> Response:
    """Token ids to text, control tokens included (llama-server's /detokenize)."""
    body = await read_body(http, DetokenizeBody)
    async with leased_model(registry_of(http), body.model) as model:
        return await _detokenize(body, model)


async def _detokenize(body: DetokenizeBody, model: LlamaModel) -> Response:
    check_ids(body.tokens, model, "tokens")

    def work() -> bytes:
        return b"".join(model.piece(t, special=True) for t in body.tokens)

    text = (
        work()
        if len(body.tokens) <= INLINE_TOKENIZE_CHARS
        else await anyio.to_thread.run_sync(work)
    )
    return json_response({"content": text.decode(errors="replace")})


def piece_entry(model: LlamaModel, token: int) -> dict[str, Any]:
    piece = model.piece(token, special=True)
    try:
        return {"id": token, "piece": piece.decode()}
    except UnicodeDecodeError:  # a byte of a multi-byte character
        return {"id": token, "piece": list(piece)}


async def apply_template(http: HttpRequest) -> Response:
    """A chat as the prompt text this server would run (llama-server's /apply-template):
    the model's template, a last assistant turn continued; the text can go to /completion."""
    body = await read_body(http, ChatCompletionBody, precheck=unsupported_message)
    async with leased_model(registry_of(http), body.model) as model:
        prompt = chat_prompt(body, model)
        tokens = await anyio.to_thread.run_sync(lambda: encode(model, prompt, model.num_vocab))
        text = b"".join(model.piece(t, special=True) for t in tokens)
    return json_response({"prompt": text.decode(errors="replace")})
