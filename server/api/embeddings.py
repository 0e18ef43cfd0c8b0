"""``POST /v1/embeddings``: OpenAI's shape, mean-pooled unit vectors.

``encoding_format: "base64"`` (what the openai client asks for by default)
sends each vector as the base64 of its little-endian float32 bytes.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any

import anyio.to_thread
import numpy as np
from starlette.requests import Request as HttpRequest
from starlette.responses import Response

from server.api.fields import MAX_PROMPT_CHARS
from server.api.http import json_response, read_body
from server.errors import ApiError, context_overflow
from server.generation import registry_of
from server.models.registry import ModelRegistry
from server.schema import spec

MAX_INPUTS = 2048  # OpenAI's limit per request
Vectors = np.ndarray[Any, np.dtype[np.float32]]  # one row per input, or one vector


@dataclass(slots=True, frozen=True)
class EmbeddingBody:
    """POST /v1/embeddings"""

    input: str | list[str] = spec(
        "", doc=f"a text, or a list of up to {MAX_INPUTS} texts", required=True
    )
    model: str | None = spec(None, doc="a configured model name; the default when omitted")
    encoding_format: str = spec(
        "float",
        doc="float: lists of numbers; base64: little-endian float32 bytes",
        choices=("float", "base64"),
    )
    user: str | None = spec(None, doc="end-user id (recorded nowhere)")

    def __post_init__(self) -> None:
        texts = self.texts
        if not 1 <= len(texts) <= MAX_INPUTS:
            raise ValueError(f"input: send 1 to {MAX_INPUTS} texts, got {len(texts)}")
        for i, text in enumerate(texts):
            where = "input" if isinstance(self.input, str) else f"input[{i}]"
            if not text:
                raise ValueError(f"{where}: must not be empty")
            if len(text) > MAX_PROMPT_CHARS:
                raise ValueError(f"{where}: at most {MAX_PROMPT_CHARS} characters")

    @property
    def texts(self) -> list[str]:
        return [self.input] if isinstance(self.input, str) else self.input


async def create_embeddings(http: HttpRequest) -> Response:
    """Embed one text or many, batched into as few decodes as fit (OpenAI's /v1/embeddings)."""
    body = await read_body(http, EmbeddingBody)
    name, vectors, num_tokens = await embed_texts(registry_of(http), body.model, body.texts)
    data = [
        {"object": "embedding", "index": i, "embedding": encode(vector, body.encoding_format)}
        for i, vector in enumerate(vectors)
    ]
    usage = {"prompt_tokens": num_tokens, "total_tokens": num_tokens}
    return json_response({"object": "list", "data": data, "model": name, "usage": usage})


async def embed_texts(
    registry: ModelRegistry,
    model: str | None,
    texts: list[str],
    field: str = "input",
    *,
    truncate: bool = False,
) -> tuple[str, Vectors, int]:
    """The model's name, a unit vector per text (rows), and the tokens they took; an
    input longer than the model embeds is cut (``truncate``) or a 400 naming it."""
    name = registry.resolve_name(model)
    async with registry.embedders.lease(name) as embedder:
        inputs = await anyio.to_thread.run_sync(lambda: [embedder.tokenize(t) for t in texts])
        for i, tokens in enumerate(inputs):
            if len(tokens) > embedder.max_tokens and truncate:
                inputs[i] = tokens[: embedder.max_tokens]
            elif len(tokens) > embedder.max_tokens:  # at most one batch (batch_tokens) a text
                where = field if len(texts) == 1 else f"{field}[{i}]"
                overflow = context_overflow(len(tokens), embedder.max_tokens, name, where)
                message = (
                    f"{where}: {len(tokens)} tokens, but model {name!r} embeds at most "
                    f"{embedder.max_tokens} per input (its batch_tokens, the maximum context "
                    "length of an input), so it exceeds the available context size; shorten "
                    "or split it"
                )
                raise ApiError(400, message, extra=overflow.extra)
        vectors = await anyio.to_thread.run_sync(embedder.embed, inputs)
    return name, vectors, sum(len(tokens) for tokens in inputs)


def encode(vector: Vectors, encoding_format: str) -> Any:
    if encoding_format == "base64":
        return base64.b64encode(vector.astype("<f4").tobytes()).decode()
    return vector.tolist()
