"""Every field the installed official SDKs define is one the server's schemas declare
(honoured, ignored, or refused with its reason), read from the SDKs' own param types.

Walks each SDK's request type (TypedDicts in ``anthropic`` and ``openai``, pydantic
models in ``ollama``) alongside the server's dataclass schema, nested objects and
unions included; an object whose ``type`` is a kind the schema does not take (a
server tool, an image block) is refused as a whole and not walked. A field missing
from the schema would be refused under ``strict_fields`` and reported as unknown
otherwise: a new SDK release that adds one fails here, naming it.
"""

from __future__ import annotations

import dataclasses
import typing
from typing import Any, get_args, get_origin

import ollama._types as ollama_types
import pydantic
import pytest
import typing_extensions
from anthropic.types import message_count_tokens_params, message_create_params
from openai.types import completion_create_params, embedding_create_params
from openai.types.chat import completion_create_params as chat_create_params
from openai.types.responses import response_create_params

from server.api.anthropic.schemas import REFUSED_BLOCKS, CountTokensBody, MessagesBody
from server.api.chat_body import UNSUPPORTED, ChatCompletionBody
from server.api.embeddings import EmbeddingBody
from server.api.ollama.embeddings import EmbedBody, EmbeddingsBody
from server.api.ollama.schemas import OllamaChatBody, OllamaGenerateBody
from server.api.openai.schemas import CompletionBody
from server.api.responses.schemas import REFUSED, ResponsesBody
from server.schema import declared_fields, wire_name

LITERALS = (typing.Literal, typing_extensions.Literal)

# fields an SDK defines that the server refuses by name with a 400 saying why
# (``UNSUPPORTED``, ``REFUSED``)
REFUSED_BY_NAME = {
    "chat": {
        *UNSUPPORTED,
        "messages.audio",
        "messages.function_call",
        "messages.role=function",  # legacy function calling: "must be one of ..."
    },
    "completions": {*UNSUPPORTED},
    "responses": {
        *REFUSED,
    },
}
CASES = [
    ("messages", message_create_params.MessageCreateParamsStreaming, MessagesBody),
    ("count_tokens", message_count_tokens_params.MessageCountTokensParams, CountTokensBody),
    ("chat", chat_create_params.CompletionCreateParamsStreaming, ChatCompletionBody),
    ("completions", completion_create_params.CompletionCreateParamsStreaming, CompletionBody),
    ("embeddings", embedding_create_params.EmbeddingCreateParams, EmbeddingBody),
    ("responses", response_create_params.ResponseCreateParamsStreaming, ResponsesBody),
    ("ollama chat", ollama_types.ChatRequest, OllamaChatBody),
    ("ollama generate", ollama_types.GenerateRequest, OllamaGenerateBody),
    ("ollama embed", ollama_types.EmbedRequest, EmbedBody),
    ("ollama embeddings", ollama_types.EmbeddingsRequest, EmbeddingsBody),
]


def _sdk_objects(tp: Any) -> list[Any]:
    """The TypedDicts and pydantic models an SDK annotation may hold, unions unwrapped."""
    if typing_extensions.is_typeddict(tp):
        return [tp]
    if isinstance(tp, type) and issubclass(tp, pydantic.BaseModel):
        return [tp]
    if get_origin(tp) in LITERALS:
        return []
    return [obj for arg in get_args(tp) for obj in _sdk_objects(arg)]


def _sdk_keys(obj: Any) -> dict[str, Any]:
    if typing_extensions.is_typeddict(obj):
        return typing_extensions.get_type_hints(obj)
    return {field.alias or name: field.annotation for name, field in obj.model_fields.items()}


def _literals(tp: Any) -> list[str]:
    if get_origin(tp) in LITERALS:
        return [v for v in get_args(tp) if isinstance(v, str)]
    return [v for arg in get_args(tp) for v in _literals(arg)]


def _schemas(tp: Any) -> list[Any]:
    if dataclasses.is_dataclass(tp):
        return [tp]
    return [cls for arg in get_args(tp) for cls in _schemas(arg)]


def missing_fields(sdk: Any, ours: Any, path: str = "", seen: set[Any] | None = None) -> set[str]:
    """Paths of SDK fields (``name``, or ``name=value`` for a literal choice) ``ours``
    does not declare."""
    seen = set() if seen is None else seen
    missing: set[str] = set()
    for obj in _sdk_objects(sdk):
        for cls in _schemas(ours):
            if (obj, cls) in seen:
                continue
            seen.add((obj, cls))
            fields = {wire_name(f): f for f in declared_fields(cls)}
            keys = _sdk_keys(obj)
            kinds = set(_literals(keys.get("type")))
            taken = set(fields["type"].metadata.get("choices") or ()) if "type" in fields else set()
            if kinds and taken and not kinds & (taken - set(REFUSED_BLOCKS)):
                continue  # a kind refused as a whole (a server tool, an image block)
            hints = typing.get_type_hints(cls)
            for key, annotation in keys.items():
                where = f"{path}.{key}" if path else key
                if key not in fields:
                    missing.add(where)
                    continue
                choices = fields[key].metadata.get("choices")
                if choices and key != "type":
                    missing |= {f"{where}={v}" for v in _literals(annotation) if v not in choices}
                missing |= missing_fields(annotation, hints[fields[key].name], where, seen)
    return missing


@pytest.mark.parametrize(("family", "sdk", "schema"), CASES, ids=[c[0] for c in CASES])
def test_every_sdk_field_is_declared(family: str, sdk: Any, schema: type[Any]) -> None:
    refused = REFUSED_BY_NAME.get(family, set())
    assert missing_fields(sdk, schema) - refused == set()


@dataclasses.dataclass
class _Tool:
    name: str


@dataclasses.dataclass
class _Body:
    model: str
    tools: list[_Tool]


def test_the_walk_sees_nested_fields() -> None:
    """The check itself: a schema without the SDK's nested fields is caught."""
    missing = missing_fields(message_create_params.MessageCreateParamsStreaming, _Body)
    assert {"messages", "tools.input_schema", "tools.strict"} <= missing
