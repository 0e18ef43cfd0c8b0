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

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import anyio.to_thread
from starlette.requests import Request as HttpRequest
from starlette.responses import Response
from starlette.routing import Route

from server.api.routes import json_response, read_body
from server.api.schemas import MAX_PROMPT_CHARS
from server.errors import ApiError
from server.generation import INLINE_TOKENIZE_CHARS, registry_of
from server.schema import spec
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
    model = (await registry_of(http).get(body.model)).model
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
    model = (await registry_of(http).get(body.model)).model
    check_ids(body.tokens, model, "tokens")

    def work() -> bytes:
        return b"".join(model.piece(t, special=True) for t in body.tokens)

    text = (
        work()
        if len(body.tokens) <= INLINE_TOKENIZE_CHARS
        else await anyio.to_thread.run_sync(work)
    )
    return json_response({"content": text.decode(errors="replace")})


def encode_mixed(
    model: LlamaModel, parts: list[str | int], add_special: bool, parse_special: bool
) -> list[int]:
    """Strings tokenized, ids kept; only a leading string gets BOS (as llama-server)."""
    tokens: list[int] = []
    for i, part in enumerate(parts):
        if isinstance(part, int):
            tokens.append(part)
        else:
            special = add_special and i == 0
            tokens += model.tokenize(part, parse_special=parse_special, add_special=special)
    return tokens


def piece_entry(model: LlamaModel, token: int) -> dict[str, Any]:
    piece = model.piece(token, special=True)
    try:
        return {"id": token, "piece": piece.decode()}
    except UnicodeDecodeError:  # a byte of a multi-byte character
        return {"id": token, "piece": list(piece)}


def check_ids(tokens: Sequence[str | int], model: LlamaModel, field: str) -> None:
    """Each id (strings are skipped) must be in the vocabulary."""
    for i, token in enumerate(tokens):
        if isinstance(token, int) and not 0 <= token < model.num_vocab:
            raise ApiError(
                400,
                f"{field}[{i}]: token id {token} is outside the vocabulary of "
                f"{model.path.name} (0..{model.num_vocab - 1})",
            )


BODIES = {"/tokenize": TokenizeBody, "/detokenize": DetokenizeBody}
ROUTES = [
    Route("/tokenize", tokenize, methods=["POST"]),
    Route("/detokenize", detokenize, methods=["POST"]),
]
