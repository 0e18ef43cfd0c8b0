"""Ollama's embedding routes: ``/api/embed`` and the legacy ``/api/embeddings``.

The legacy route (``ollama.embeddings()``, older LangChain) takes one ``prompt``
and answers ``{"embedding": [...]}``; Ollama's legacy vectors are not normalised,
these are (the same vectors as ``/api/embed``): cosine similarity, what clients
compute with them, is the same either way.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from starlette.requests import Request as HttpRequest
from starlette.responses import Response

from server.api.error_shapes import ollama_error, shaped_errors
from server.api.fields import KeepAliveFields
from server.api.http import json_response, read_body, registry_of
from server.errors import ApiError
from server.schema import spec
from server.serving.embeddings import embed_texts


@dataclass(slots=True, frozen=True, kw_only=True)
class EmbedBody(KeepAliveFields):
    """POST /api/embed"""

    model: str = spec(doc="a configured model name", min_length=1)
    input: str | list[str] = spec(doc="a text or a list of texts")
    truncate: bool = spec(True, doc="cut inputs longer than the model embeds; false: a 400")
    options: dict[str, object] | None = spec(None, doc="accepted; embedding has no sampling")
    dimensions: int | None = spec(None, doc="refused unless the model's own size", ge=1)


@dataclass(slots=True, frozen=True, kw_only=True)
class EmbeddingsBody(KeepAliveFields):
    """POST /api/embeddings (Ollama's legacy route)"""

    model: str = spec(doc="a configured model name", min_length=1)
    prompt: str = spec("", doc="the text; empty: an empty embedding, as Ollama answers")
    options: dict[str, object] | None = spec(None, doc="accepted; embedding has no sampling")


@shaped_errors(ollama_error)
async def embed(http: HttpRequest) -> Response:
    """Unit vectors of one text or many (Ollama's /api/embed)."""
    body = await read_body(http, EmbedBody)
    texts = [body.input] if isinstance(body.input, str) else body.input
    if not texts or not all(texts):
        raise ApiError(400, "input: send one or more non-empty texts")
    started = asyncio.get_running_loop().time()
    name, vectors, num_tokens = await embed_texts(
        registry_of(http), body.model, texts, "input", truncate=body.truncate
    )
    if body.dimensions is not None and body.dimensions != vectors.shape[1]:
        raise ApiError(400, f"dimensions: model {name!r} embeds in {vectors.shape[1]} only")
    took = round((asyncio.get_running_loop().time() - started) * 1e9)
    return json_response(
        {
            "model": name,
            "embeddings": [v.tolist() for v in vectors],
            "total_duration": took,
            "load_duration": 0,
            "prompt_eval_count": num_tokens,
        }
    )


@shaped_errors(ollama_error)
async def embeddings(http: HttpRequest) -> Response:
    """The unit vector of one prompt (Ollama's legacy /api/embeddings)."""
    body = await read_body(http, EmbeddingsBody)
    if not body.prompt:
        registry_of(http).resolve_name(body.model)  # an unknown model is still a 404
        return json_response({"embedding": []})
    _, vectors, _ = await embed_texts(
        registry_of(http), body.model, [body.prompt], "prompt", truncate=True
    )
    return json_response({"embedding": vectors[0].tolist()})
