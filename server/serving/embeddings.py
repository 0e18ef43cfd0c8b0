"""Texts embedded by a model, without HTTP: what OpenAI's, llama-server's and Ollama's
embedding routes share.
"""

from __future__ import annotations

from typing import Any

import anyio.to_thread
import numpy as np

from server.errors import ApiError, context_overflow
from server.models.registry import ModelRegistry

Vectors = np.ndarray[Any, np.dtype[np.float32]]  # one row per input, or one vector


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
