"""Anthropic's tools and tool choice, and the server tools this server refuses."""

from __future__ import annotations

import json
from dataclasses import dataclass

from server.schema import spec
from server.serving.chat.messages import FunctionDef


@dataclass(slots=True, frozen=True)
class CacheControl:
    """A cache breakpoint; accepted, and needless here (every prefix is cached)."""

    type: str = spec("ephemeral", doc="ephemeral", choices=("ephemeral",))
    ttl: str | None = spec(None, doc="5m or 1h (ignored)")


@dataclass(slots=True, frozen=True)
class ToolDef:
    """A tool the model may call (a client tool; server tools are not run here)."""

    name: str = spec(doc="letters, digits, _ and -", min_length=1, max_length=64)
    input_schema: dict[str, object] | None = spec(
        None, doc="a JSON Schema of the input (an object)", required=True
    )
    description: str | None = spec(None, doc="what it does, for the model")
    type: str | None = spec(
        None, doc='"custom" or absent; server tools are refused', choices=("custom",)
    )
    cache_control: CacheControl | None = spec(None, doc="accepted; the prefix cache is automatic")
    strict: bool | None = spec(None, doc="with tool_choice any or tool: always enforced")
    input_examples: list[dict[str, object]] | None = spec(
        None, doc="example inputs, shown to the model after the description"
    )
    eager_input_streaming: bool | None = spec(
        None, doc="accepted; a stream sends the input as it is generated anyway"
    )
    defer_loading: bool | None = spec(
        None, doc="accepted; the tool is always in the prompt (there is no tool search)"
    )
    allowed_callers: list[str] | None = spec(
        None, doc="accepted; the model is the only caller (no code execution here)"
    )

    def function(self) -> FunctionDef:
        """The tool as a chat body's function; examples join the description, as
        Anthropic shows them to the model."""
        description = self.description
        if self.input_examples:
            examples = "\n".join(json.dumps(example) for example in self.input_examples)
            description = f"{description or ''}\n\nExample inputs:\n{examples}".lstrip()
        return FunctionDef(self.name, description, self.input_schema, self.strict)


def server_tool(data: object) -> str | None:
    """A message naming the first of Anthropic's server tools (web search, code execution,
    ...) in the body: this server runs none, and they have no input_schema to parse."""
    tools = data.get("tools") if isinstance(data, dict) else None
    for i, tool in enumerate(tools if isinstance(tools, list) else []):
        kind = tool.get("type") if isinstance(tool, dict) else None
        if kind not in (None, "custom"):
            return (
                f"tools[{i}]: {kind!r} is a tool Anthropic runs on its servers; this server "
                "runs none: describe the tool with name and input_schema"
            )
    return None


@dataclass(slots=True, frozen=True)
class ToolChoice:
    """How the model uses the tools."""

    type: str = spec(doc="auto, any, tool or none", choices=("auto", "any", "tool", "none"))
    name: str | None = spec(None, doc="with tool: which one")
    disable_parallel_tool_use: bool = spec(False, doc="at most one call")

    def __post_init__(self) -> None:
        if (self.type == "tool") != (self.name is not None):
            raise ValueError('tool_choice.name: required with type "tool", and only then')
