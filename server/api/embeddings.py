"""``POST /v1/embeddings``: OpenAI's shape, mean-pooled unit vectors.

``encoding_format: "base64"`` (what the openai client asks for by default)
sends each vector as the base64 of its little-endian float32 bytes.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request as HttpRequest
from starlette.responses import Response

from server.api.fields import MAX_PROMPT_CHARS
from server.api.http import json_response, read_body, registry_of
from server.schema import spec
from server.serving.embeddings import EmbedInput, Vectors, embed_texts

MAX_INPUTS = 2048  # OpenAI's limit per request


@dataclass(slots=True, frozen=True)
class EmbeddingBody:
    """POST /v1/embeddings"""

    input: str | list[object] | dict[str, object] = spec(
        "",
        doc=f"a text, or a list of up to {MAX_INPUTS}; OpenAI's token ids: a list of ids "
        "(one input) or of id lists, and llama-server's text and ids mixed in one list; "
        'llama-server\'s objects may stand for a text: {"prompt_string": text} or '
        '{"content": [{"type": "text", "text": ...}, ...]}',
        required=True,
    )
    model: str | None = spec(None, doc="a configured model name; the default when omitted")
    encoding_format: str = spec(
        "float",
        doc="float: lists of numbers; base64: little-endian float32 bytes",
        choices=("float", "base64"),
    )
    user: str | None = spec(None, doc="end-user id (recorded nowhere)")
    dimensions: int | None = spec(
        None,
        doc="refused: vectors are the model's own size (shortening them would need a "
        "model trained for it)",
    )

    def __post_init__(self) -> None:
        if self.dimensions is not None:  # ignoring it would answer another size than asked
            raise ValueError(
                "dimensions: shortened vectors are not supported; remove the field (the "
                "vectors have the model's own size)"
            )
        inputs = self.inputs
        if not 1 <= len(inputs) <= MAX_INPUTS:
            raise ValueError(f"input: send 1 to {MAX_INPUTS} inputs, got {len(inputs)}")
        for i, item in enumerate(inputs):
            where = "input" if len(inputs) == 1 else f"input[{i}]"
            if not item:
                raise ValueError(f"{where}: must not be empty")
            size = len(item) if isinstance(item, str) else sum(len(str(p)) for p in item)
            if size > MAX_PROMPT_CHARS:
                raise ValueError(f"{where}: at most {MAX_PROMPT_CHARS} characters")

    @property
    def inputs(self) -> list[EmbedInput]:
        if isinstance(self.input, list) and _is_one_prompt(self.input):
            return [_parts(self.input, "input")]  # token ids (text mixed in): one input
        items = self.input if isinstance(self.input, list) else [self.input]
        where = "input" if not isinstance(self.input, list) else "input[{}]"
        return [_input(item, where.format(i)) for i, item in enumerate(items)]


def _is_one_prompt(items: list[object]) -> bool:
    """A list of ids, or llama-server's ids and text mixed: one input, not a list of them."""
    ids = [isinstance(x, int) and not isinstance(x, bool) for x in items]
    return any(ids) and all(i or isinstance(x, str) for i, x in zip(ids, items, strict=True))


def _parts(items: list[object], where: str) -> list[str | int]:
    parts: list[str | int] = []
    for i, part in enumerate(items):
        if isinstance(part, bool) or not isinstance(part, int | str):
            raise ValueError(f"{where}[{i}]: expected a token id (or text)")
        parts.append(part)
    return parts


def _input(item: object, where: str) -> EmbedInput:
    """One input: a text, token ids (text mixed in), or llama-server's object holding a text."""
    if isinstance(item, list):
        return _parts(item, where)
    if isinstance(item, str):
        return item
    if isinstance(item, dict) and set(item) == {"prompt_string"}:
        return _text(item["prompt_string"], f"{where}.prompt_string")
    if isinstance(item, dict) and set(item) == {"content"} and isinstance(item["content"], list):
        parts = item["content"]
        if all(isinstance(p, dict) and p.get("type") == "text" for p in parts):
            return "".join(_text(p.get("text"), f"{where}.content[].text") for p in parts)
        raise ValueError(f'{where}.content: only {{"type": "text"}} parts; the model reads text')
    raise ValueError(
        f'{where}: expected a text, token ids, {{"prompt_string": text}} or '
        '{"content": [text parts]}'
    )


def _text(item: object, where: str) -> str:
    if isinstance(item, str):
        return item
    raise ValueError(f"{where}: expected a text")


async def create_embeddings(http: HttpRequest) -> Response:
    """Embed one text or many, batched into as few decodes as fit (OpenAI's /v1/embeddings)."""
    body = await read_body(http, EmbeddingBody)
    name, vectors, num_tokens = await embed_texts(registry_of(http), body.model, body.inputs)
    data = [
        {"object": "embedding", "index": i, "embedding": encode(vector, body.encoding_format)}
        for i, vector in enumerate(vectors)
    ]
    usage = {"prompt_tokens": num_tokens, "total_tokens": num_tokens}
    return json_response({"object": "list", "data": data, "model": name, "usage": usage})


def encode(vector: Vectors, encoding_format: str) -> Any:
    if encoding_format == "base64":
        return base64.b64encode(vector.astype("<f4").tobytes()).decode()
    return vector.tolist()
