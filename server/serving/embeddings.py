"""Texts embedded by a model, without HTTP: what OpenAI's, llama-server's and Ollama's
embedding routes share.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import anyio.to_thread
import numpy as np

from server.errors import ApiError, context_overflow
from server.models.registry import ModelRegistry
from server.prompts import check_ids, encode_mixed

Vectors = np.ndarray[Any, np.dtype[np.float32]]  # one row per input, or one vector
# a text, or token ids with text mixed in (OpenAI's token arrays, llama-server's mixed)
EmbedInput = str | list[str | int]


async def embed_texts(
    registry: ModelRegistry,
    model: str | None,
    texts: Sequence[EmbedInput],
    field: str = "input",
    *,
    truncate: bool = False,
) -> tuple[str, Vectors, int]:
    """The model's name, a unit vector per text (rows), and the tokens they took; an
    input longer than the model embeds is cut (``truncate``) or a 400 naming it."""
    name = registry.resolve_name(model)
    async with registry.embedders.lease(name) as embedder:
        llama = embedder.model
        for i, text in enumerate(texts):  # ids the vocabulary lacks would crash llama.cpp
            if not isinstance(text, str):
                check_ids(text, llama, field if len(texts) == 1 else f"{field}[{i}]")

        def tokenize(text: EmbedInput) -> list[int]:
            if isinstance(text, str):
                return embedder.tokenize(text)
            return encode_mixed(llama, text, add_special=True, parse_special=False)

        inputs = await anyio.to_thread.run_sync(lambda: [tokenize(t) for t in texts])
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
