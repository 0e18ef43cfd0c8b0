"""Request bodies of Anthropic's Messages API, and their translation to a chat body.

A message's content blocks become chat turns as llama-server converts them:
``tool_use`` blocks an assistant turn's ``tool_calls``, each ``tool_result`` a
``tool`` turn (before the user's text of the same message), ``thinking``
blocks the turn's ``reasoning_content``, which a thinking model's template shows
where it shows its own (Qwen 3: the turns after the last user message, the thinking
of a tool loop in progress) and drops elsewhere. ``cache_control`` is accepted and
needs nothing: the prefix cache reuses any shared beginning.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from server.api.anthropic.tools import CacheControl, ToolChoice, ToolDef
from server.api.chat_body import ChatCompletionBody
from server.api.fields import ServingFields
from server.schema import spec
from server.serving.chat.messages import (
    ChatMessage,
    FunctionCall,
    JsonSchemaFormat,
    NamedFunction,
    NamedToolChoice,
    ResponseFormat,
    Tool,
    ToolCallItem,
)
from server.serving.limits import MAX_ASKED_TOKENS

BLOCK_TYPES = ("text", "tool_use", "tool_result", "thinking", "redacted_thinking")
REFUSED_BLOCKS = ("image", "document", "search_result", "server_tool_use", "container_upload")


@dataclass(slots=True, frozen=True)
class TextBlock:
    """A text block (of the system prompt or a tool result)."""

    text: str = spec(doc="the text")
    type: str = spec("text", doc="text", choices=("text",))
    cache_control: CacheControl | None = spec(None, doc="accepted; the prefix cache is automatic")
    citations: list[object] | None = spec(None, doc="accepted and not used")


@dataclass(slots=True, frozen=True)
class ContentBlock:
    """One block of a message: text, tool_use, tool_result or thinking."""

    type: str = spec(doc="the kind of block", choices=BLOCK_TYPES + REFUSED_BLOCKS)
    text: str | None = spec(None, doc="text: the text")
    id: str | None = spec(None, doc="tool_use: the call's id")
    name: str | None = spec(None, doc="tool_use: the tool called")
    input: dict[str, object] | None = spec(None, doc="tool_use: the arguments")
    tool_use_id: str | None = spec(None, doc="tool_result: the call it answers")
    content: str | list[TextBlock] | None = spec(None, doc="tool_result: the result")
    is_error: bool | None = spec(None, doc="tool_result: the call failed")
    thinking: str | None = spec(None, doc="thinking: the reasoning (not shown to the model)")
    signature: str | None = spec(None, doc="thinking: accepted and not checked")
    data: str | None = spec(None, doc="redacted_thinking: accepted and dropped")
    source: object = spec(None, doc="image, document: refused (the models read text only)")
    cache_control: CacheControl | None = spec(None, doc="accepted; the prefix cache is automatic")
    citations: list[object] | None = spec(None, doc="accepted and not used")
    caller: object = spec(None, doc="tool_use: who made the call (accepted; not shown)")
    toolset_name: str | None = spec(None, doc="tool_use, tool_result: accepted; not shown")

    def __post_init__(self) -> None:
        if self.type in REFUSED_BLOCKS:
            raise ValueError(
                f"content: {self.type} blocks are not supported: the served models read text "
                "only; send text blocks"
            )
        needs = {"text": ("text",), "tool_use": ("id", "name", "input")}
        needs |= {"tool_result": ("tool_use_id",), "thinking": ("thinking",)}
        for name in needs.get(self.type, ()):
            if getattr(self, name) is None:
                raise ValueError(f"content: a {self.type} block needs {name!r}")

    def result_text(self) -> str:
        if isinstance(self.content, list):
            return "".join(block.text for block in self.content)
        return self.content or ""


@dataclass(slots=True, frozen=True)
class Message:
    """One turn: a string, or a list of content blocks."""

    role: str = spec(
        doc="user, assistant, or system (a system turn where it stands)",
        choices=("user", "assistant", "system"),
    )
    content: str | list[ContentBlock] = spec(doc="the text, or content blocks")

    def __post_init__(self) -> None:
        blocks = self.content if isinstance(self.content, list) else []
        allowed: dict[str, tuple[str, ...]] = {"system": ("text",)}
        allowed |= {"user": ("text", "tool_result"), "assistant": ("text", "tool_use")}
        for block in blocks:
            if block.type not in (*allowed[self.role], "thinking", "redacted_thinking"):
                raise ValueError(f"content: a {self.role} message has no {block.type} blocks")


@dataclass(slots=True, frozen=True)
class Thinking:
    """Extended thinking: a thinking model's think block comes as a thinking block;
    budget_tokens ends it after so many tokens, disabled turns it off."""

    type: str = spec(
        doc="enabled, disabled, adaptive or between_tools",
        choices=("enabled", "disabled", "adaptive", "between_tools"),
    )
    budget_tokens: int | None = spec(None, doc="most thinking tokens", ge=1)
    display: str | None = spec(None, doc="summarized or omitted")


@dataclass(slots=True, frozen=True)
class JsonOutputFormat:
    """Structured output: the reply is an instance of the schema (grammar-constrained)."""

    schema: dict[str, object] = spec(doc="the JSON Schema")
    type: str = spec("json_schema", doc="json_schema", choices=("json_schema",))


@dataclass(slots=True, frozen=True)
class OutputConfig:
    effort: str | None = spec(None, doc="accepted; the served models do not think")
    format: JsonOutputFormat | None = spec(None, doc="a JSON Schema the reply must follow")


@dataclass(slots=True, frozen=True)
class Diagnostics:
    previous_message_id: str | None = spec(None, doc="accepted; nothing is reported")


@dataclass(slots=True, frozen=True)
class Metadata:
    user_id: str | None = spec(None, doc="end-user id (recorded nowhere)")


@dataclass(slots=True, frozen=True)
class PromptFields(ServingFields):
    """What makes the prompt: the model, the system prompt, messages, tools."""

    model: str = spec("", doc="a configured model name", required=True, min_length=1)
    messages: list[Message] = spec(
        doc="the conversation so far", default_factory=list, required=True, min_length=1
    )
    system: str | list[TextBlock] | None = spec(None, doc="the system prompt")
    tools: list[ToolDef] | None = spec(None, doc="tools the model may call", max_length=128)
    tool_choice: ToolChoice | None = spec(None, doc="auto (default), any, tool or none")
    thinking: Thinking | None = spec(
        None, doc="enabled (budget_tokens: most thinking tokens), disabled, adaptive"
    )
    cache_control: CacheControl | None = spec(None, doc="accepted; the prefix cache is automatic")
    output_config: OutputConfig | None = spec(None, doc="effort (accepted) and format")
    output_format: JsonOutputFormat | None = spec(None, doc="a JSON Schema the reply must follow")
    speed: str | None = spec(None, doc="accepted; there is one speed")
    user_profile_id: str | None = spec(None, doc="accepted; recorded nowhere")
    workspace_id: str | None = spec(None, doc="accepted; recorded nowhere")

    def chat_body(self, **sampling: object) -> ChatCompletionBody:
        """The same request as /v1/chat/completions takes it (a ValueError is the client's)."""
        messages = []
        if self.system:
            system = self.system
            text = system if isinstance(system, str) else "".join(b.text for b in system)
            messages.append(ChatMessage(role="system", content=text))
        for message in self.messages:
            messages += _chat_turns(message)
        tools = [Tool(function=t.function()) for t in self.tools or []]
        extra: dict[str, object] = {}
        choice = self.tool_choice
        if choice is not None:
            names = {"auto": "auto", "any": "required", "none": "none"}
            extra["tool_choice"] = names.get(choice.type) or NamedToolChoice(
                function=NamedFunction(name=choice.name or "")
            )
            extra["parallel_tool_calls"] = False if choice.disable_parallel_tool_use else None
        if self.thinking is not None and self.thinking.type == "disabled":
            extra["reasoning_budget"] = 0
        elif self.thinking is not None and self.thinking.budget_tokens is not None:
            extra["reasoning_budget"] = self.thinking.budget_tokens
        return ChatCompletionBody(
            model=self.model,
            messages=messages,
            tools=tools or None,
            **self.serving(),  # type: ignore[arg-type]
            **extra,  # type: ignore[arg-type]
            **{k: v for k, v in sampling.items() if v is not None},  # type: ignore[arg-type]
        )


def _chat_turns(message: Message) -> list[ChatMessage]:
    if isinstance(message.content, str):
        return [ChatMessage(role=message.role, content=message.content)]
    text = "".join(b.text or "" for b in message.content if b.type == "text")
    if message.role == "assistant":
        calls = [
            ToolCallItem(id=b.id or "", function=FunctionCall(b.name or "", json.dumps(b.input)))
            for b in message.content
            if b.type == "tool_use"
        ]
        thinking = "".join(b.thinking or "" for b in message.content if b.type == "thinking")
        return [
            ChatMessage(
                role="assistant",
                content=text or None,
                tool_calls=calls or None,
                reasoning_content=thinking or None,
            )
        ]
    turns = [
        ChatMessage(role="tool", content=b.result_text(), tool_call_id=b.tool_use_id)
        for b in message.content
        if b.type == "tool_result"
    ]
    if turns and not any(b.type == "text" for b in message.content):
        return turns
    return [*turns, ChatMessage(role=message.role, content=text)]


@dataclass(slots=True, frozen=True)
class CountTokensBody(PromptFields):
    """POST /v1/messages/count_tokens"""


@dataclass(slots=True, frozen=True)
class MessagesBody(PromptFields):
    """POST /v1/messages"""

    max_tokens: int = spec(
        1, doc="most tokens to generate", ge=1, le=MAX_ASKED_TOKENS, required=True
    )
    stop_sequences: list[str] | None = spec(None, doc="up to 8 stop strings")
    stream: bool = spec(False, doc="send Anthropic's server-sent events")
    temperature: float | None = spec(None, doc="0 is greedy; default 1", ge=0.0, le=1.0)
    top_p: float | None = spec(None, doc="nucleus mass", gt=0.0, le=1.0)
    top_k: int | None = spec(None, doc="k likeliest tokens; 0 disables", ge=0)
    metadata: Metadata | None = spec(None, doc="accepted; recorded nowhere")
    service_tier: str | None = spec(None, doc="accepted; there is one tier")
    inference_geo: str | None = spec(None, doc="accepted; inference is here")
    container: object = spec(None, doc="accepted; no containers (server tools are refused)")
    diagnostics: Diagnostics | None = spec(None, doc="accepted; nothing is reported")

    def chat(self) -> ChatCompletionBody:
        output = self.output_config.format if self.output_config else None
        output = self.output_format or output
        schema = JsonSchemaFormat(name="output", schema=output.schema) if output else None
        return self.chat_body(
            max_tokens=self.max_tokens,
            stop=self.stop_sequences,
            temperature=self.temperature,
            top_p=self.top_p,
            top_k=self.top_k,
            response_format=schema and ResponseFormat(type="json_schema", json_schema=schema),
        )
