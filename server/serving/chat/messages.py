"""The chat vocabulary every chat family's body is made of: turns, tool calls, tools and
response formats (see server.schema)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from server.schema import spec
from server.serving.structured import json_object_gbnf, schema_to_gbnf


@dataclass(slots=True, frozen=True)
class ContentPart:
    """A part of a message's content; only text parts are supported."""

    type: str = spec(doc="content part type", choices=("text",))
    text: str = spec(doc="the text")
    prompt_cache_breakpoint: object = spec(None, doc="accepted; the prefix cache is automatic")


@dataclass(slots=True, frozen=True)
class FunctionCall:
    """A function the assistant called, with its arguments as JSON text."""

    name: str = spec(doc="the function's name", min_length=1, max_length=64)
    arguments: str = spec(doc="the arguments, a JSON object as text", max_length=1_000_000)


_REFUSED = {
    "audio": "audio is not supported by this server",
    "function_call": "legacy function calling is not supported; send tool_calls",
}


@dataclass(slots=True, frozen=True)
class ToolCallItem:
    """One tool call of an assistant turn."""

    id: str = spec(doc="the call's id, which the tool turn answering it names")
    function: FunctionCall = spec(doc="what was called")
    type: str = spec("function", doc="always function", choices=("function",))


@dataclass(slots=True, frozen=True)
class ChatMessage:
    """One chat turn."""

    role: str = spec(doc="who speaks", choices=("system", "developer", "user", "assistant", "tool"))
    content: str | list[ContentPart] | None = spec(
        None,
        doc="the text, or a list of text parts (optional on an assistant turn that calls tools)",
    )
    name: str | None = spec(None, doc="optional speaker name (not shown to the model)")
    tool_calls: list[ToolCallItem] | None = spec(
        None, doc="the tools an assistant turn called", max_length=64
    )
    tool_call_id: str | None = spec(None, doc="on a tool turn: the call it answers")
    reasoning_content: str | None = spec(
        None, doc="an assistant turn's thinking, for templates that show it again"
    )
    reasoning: str | None = spec(None, doc="vLLM's name for reasoning_content")
    refusal: str | None = spec(None, doc="an assistant turn's refusal (accepted; not shown)")
    audio: object = spec(None, doc="refused: no audio")
    function_call: object = spec(None, doc="refused: send tool_calls (legacy function calling)")

    def __post_init__(self) -> None:
        for name in ("audio", "function_call"):
            if getattr(self, name) is not None:
                raise ValueError(f"{name}: {_REFUSED[name]}; remove the field")
        if self.reasoning is not None and self.reasoning_content is None:
            object.__setattr__(self, "reasoning_content", self.reasoning)
        if self.content is None and not (self.role == "assistant" and self.tool_calls):
            raise ValueError("content: required, except on an assistant turn with tool_calls")
        if self.tool_calls and self.role != "assistant":
            raise ValueError("tool_calls: only an assistant turn calls tools")
        if self.role == "tool" and not self.tool_call_id:
            raise ValueError("tool_call_id: a tool turn names the call it answers")

    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text for part in self.content)


@dataclass(slots=True, frozen=True)
class FunctionDef:
    """A function the model may call."""

    name: str = spec(doc="letters, digits, _ and -", min_length=1, max_length=64)
    description: str | None = spec(None, doc="what it does, for the model")
    parameters: dict[str, object] | None = spec(
        None, doc="a JSON Schema of its arguments (an object)"
    )
    strict: bool | None = spec(None, doc="with tool_choice required or named: always enforced")

    def __post_init__(self) -> None:
        if not re.fullmatch(r"[A-Za-z0-9_-]+", self.name):
            raise ValueError(f"function.name: letters, digits, _ and - only, got {self.name!r}")


@dataclass(slots=True, frozen=True)
class Tool:
    """A tool: a function."""

    function: FunctionDef = spec(doc="the function")
    type: str = spec("function", doc="always function", choices=("function",))


@dataclass(slots=True, frozen=True)
class NamedFunction:
    name: str = spec(doc="the function to call")


@dataclass(slots=True, frozen=True)
class NamedToolChoice:
    """Call this function."""

    function: NamedFunction = spec(doc="which function")
    type: str = spec("function", doc="always function", choices=("function",))


@dataclass(slots=True, frozen=True)
class JsonSchemaFormat:
    """A named JSON Schema the reply must be an instance of."""

    name: str = spec(
        "response",
        doc="the schema's name (OpenAI requires one, llama-server does not)",
        min_length=1,
        max_length=64,
    )
    schema: dict[str, object] | None = spec(None, doc="the JSON Schema (any JSON when absent)")
    description: str | None = spec(None, doc="what the format is for")
    strict: bool | None = spec(None, doc="always enforced: the output follows a grammar")


@dataclass(slots=True, frozen=True)
class ResponseFormat:
    """The reply's format: text, any JSON object, or an instance of a JSON Schema."""

    type: str = spec(doc="the format", choices=("text", "json_object", "json_schema"))
    json_schema: JsonSchemaFormat | None = spec(None, doc='the schema, with "json_schema"')
    schema: dict[str, object] | None = spec(
        None, doc='llama.cpp\'s extension: with "json_object", a JSON Schema the reply follows'
    )

    def __post_init__(self) -> None:
        if self.schema is not None and self.type != "json_object":
            raise ValueError('response_format.schema: only with type "json_object"')

    def grammar_text(self) -> str | None:
        """GBNF the output must match; a ValueError names what cannot be honoured."""
        if self.type == "text":
            return None
        if self.type == "json_object":
            if self.schema is not None:
                return schema_to_gbnf(self.schema, "response_format.schema")
            return json_object_gbnf()
        if self.json_schema is None:
            raise ValueError("response_format.json_schema: required with type json_schema")
        if self.json_schema.schema is None:
            return json_object_gbnf()
        return schema_to_gbnf(self.json_schema.schema, "response_format.json_schema.schema")
