"""The request body of OpenAI's Responses API, and its translation to a chat body.

A response is stored unless ``store`` is false (``server.api.responses.stored``):
``previous_response_id`` continues a stored one, its conversation put before
``input`` (``conversation`` objects are refused). Its items, and the chat turns they
become, are ``server.api.responses.input_items``.
"""

from __future__ import annotations

from dataclasses import dataclass

from server.api.chat_body import EFFORTS, ChatCompletionBody
from server.api.fields import ServingFields
from server.api.responses.input_items import InputItem, chat_messages
from server.schema import spec
from server.serving.chat.messages import (
    ChatMessage,
    FunctionDef,
    JsonSchemaFormat,
    NamedFunction,
    NamedToolChoice,
    ResponseFormat,
    Tool,
)
from server.serving.limits import MAX_ASKED_TOKENS

LOGPROBS = "message.output_text.logprobs"  # the include value that asks for logprobs
REFUSED = {
    "conversation": "this server keeps no conversation objects; continue with "
    "previous_response_id or send the whole conversation as input",
    "prompt": "stored prompts are not supported; send instructions and input",
    "context_management": "context management is not supported",
    "moderation": "moderation is not supported",
    "image": "image generation is not supported",
}


def refused_field(data: object) -> str | None:
    """A message naming the first field set that a stateless server cannot honour."""
    if not isinstance(data, dict):
        return None
    for name, why in REFUSED.items():
        if data.get(name) not in (None, False):
            return f"{name}: {why}; remove the field"
    tools = data.get("tools")
    for i, tool in enumerate(tools if isinstance(tools, list) else []):
        kind = tool.get("type", "function") if isinstance(tool, dict) else "function"
        if kind != "function":
            return (
                f"tools[{i}]: {kind!r} is a tool OpenAI runs itself; this server runs none: "
                "send function tools"
            )
    return None


@dataclass(slots=True, frozen=True)
class FunctionTool:
    """A function the model may call (the only kind of tool served here)."""

    name: str = spec(doc="letters, digits, _ and -", min_length=1, max_length=64)
    type: str = spec(
        "function", doc="function; built-in tools are not served", choices=("function",)
    )
    description: str | None = spec(None, doc="what it does, for the model")
    parameters: dict[str, object] | None = spec(None, doc="a JSON Schema of its arguments")
    strict: bool | None = spec(None, doc="with tool_choice required or named: enforced")
    defer_loading: bool | None = spec(
        None, doc="accepted; the tool is always in the prompt (there is no tool search)"
    )
    output_schema: dict[str, object] | None = spec(
        None, doc="accepted; the shape of the tool's result, which the client sends back"
    )
    allowed_callers: list[str] | None = spec(None, doc="accepted; the model is the only caller")
    is_async: bool | None = spec(
        None, wire="async", doc="accepted; a call is answered before the reply goes on"
    )


@dataclass(slots=True, frozen=True)
class ToolChoiceFunction:
    name: str = spec(doc="the function to call")
    type: str = spec("function", doc="function", choices=("function",))


@dataclass(slots=True, frozen=True)
class TextFormat:
    type: str = spec(
        doc="text, json_object or json_schema", choices=("text", "json_object", "json_schema")
    )
    name: str | None = spec(None, doc="json_schema: the schema's name")
    schema: dict[str, object] | None = spec(None, doc="json_schema: the JSON Schema")
    description: str | None = spec(None, doc="json_schema: what it is for")
    strict: bool | None = spec(None, doc="always enforced: the output follows a grammar")


@dataclass(slots=True, frozen=True)
class TextConfig:
    format: TextFormat | None = spec(None, doc="the reply's format")
    verbosity: str | None = spec(None, doc="accepted and not used")


@dataclass(slots=True, frozen=True)
class Reasoning:
    effort: str | None = spec(
        None, doc="for the template (reasoning_effort); none: no thinking", choices=EFFORTS
    )
    summary: str | None = spec(None, doc="accepted; the reasoning comes whole, not summarised")
    generate_summary: str | None = spec(None, doc="accepted; no reasoning to summarise")
    context: str | None = spec(
        None, doc="accepted; earlier turns' reasoning is dropped, as the chat templates do"
    )
    mode: str | None = spec(None, doc="accepted; there is one mode")


@dataclass(slots=True, frozen=True)
class ResponsesBody(ServingFields):
    """POST /v1/responses"""

    input: str | list[InputItem] = spec(
        "", doc="the text, or the conversation as items", required=True
    )
    model: str | None = spec(None, doc="a configured model name; the default when omitted")
    instructions: str | None = spec(None, doc="a system turn before the input")
    timings_per_token: bool = spec(
        False, doc="llama-server's: timings in each text delta and in the last event"
    )
    max_output_tokens: int | None = spec(
        None, doc="most tokens to generate", ge=1, le=MAX_ASKED_TOKENS
    )
    temperature: float | None = spec(None, doc="0 is greedy; default 1", ge=0.0, le=2.0)
    top_p: float | None = spec(None, doc="nucleus mass", gt=0.0, le=1.0)
    tools: list[FunctionTool] | None = spec(
        None, doc="functions the model may call", max_length=128
    )
    tool_choice: str | ToolChoiceFunction | None = spec(
        None, doc="none, auto, required, or a function", choices=("none", "auto", "required")
    )
    parallel_tool_calls: bool | None = spec(None, doc="false keeps the first call")
    text: TextConfig | None = spec(None, doc="the reply's format")
    reasoning: Reasoning | None = spec(
        None, doc="effort; a thinking model's think block comes as a reasoning item"
    )
    stream: bool = spec(False, doc="send the Responses API's server-sent events")
    store: bool | None = spec(
        None, doc="keep the response (GET /v1/responses/{id}, previous_response_id); default true"
    )
    metadata: dict[str, str] | None = spec(None, doc="echoed in the response")
    include: list[str] | None = spec(
        None,
        doc="message.output_text.logprobs: the tokens' logprobs in output_text parts; "
        "other values are accepted and add nothing",
    )
    user: str | None = spec(None, doc="end-user id (recorded nowhere)")
    safety_identifier: str | None = spec(None, doc="recorded nowhere")
    prompt_cache_key: str | None = spec(None, doc="accepted; the prefix cache is automatic")
    prompt_cache_retention: str | None = spec(None, doc="accepted; the prefix cache is automatic")
    service_tier: str | None = spec(None, doc="accepted; there is one tier")
    truncation: str | None = spec(
        None,
        doc="auto: the oldest turns are dropped until the input fits with room for the "
        "output; disabled (the default): an input too long is a 400",
        choices=("auto", "disabled"),
    )
    max_tool_calls: int | None = spec(None, doc="accepted", ge=1)
    top_logprobs: int | None = spec(
        None,
        doc="with include message.output_text.logprobs: this many alternatives per token",
        ge=0,
        le=20,
    )
    stream_options: dict[str, object] | None = spec(None, doc="accepted")
    previous_response_id: str | None = spec(
        None, doc="a stored response: its conversation and output come before input"
    )
    conversation: object = spec(None, doc="refused: use previous_response_id")
    background: bool | None = spec(
        None, doc="answer at once with a queued response; poll GET /v1/responses/{id}"
    )
    background_options: object = spec(None, doc="accepted and not used")
    access_programs: object = spec(None, doc="accepted and not used")
    prompt_cache_options: object = spec(None, doc="accepted; the prefix cache is automatic")

    def chat(self) -> ChatCompletionBody:
        """The same request as /v1/chat/completions takes it (a ValueError is the client's)."""
        messages = [] if self.instructions is None else [ChatMessage("system", self.instructions)]
        if isinstance(self.input, str):
            messages.append(ChatMessage("user", self.input))
        else:
            messages += chat_messages(self.input)
        tools = [
            Tool(function=FunctionDef(t.name, t.description, t.parameters, t.strict))
            for t in self.tools or []
        ]
        choice: str | NamedToolChoice | None = (
            NamedToolChoice(function=NamedFunction(name=self.tool_choice.name))
            if isinstance(self.tool_choice, ToolChoiceFunction)
            else self.tool_choice
        )
        sampling: dict[str, object] = {"temperature": self.temperature, "top_p": self.top_p}
        sampling["reasoning_effort"] = self.reasoning.effort if self.reasoning else None
        return ChatCompletionBody(
            model=self.model,
            messages=messages,
            max_tokens=self.max_output_tokens,
            tools=tools or None,
            tool_choice=choice,
            parallel_tool_calls=self.parallel_tool_calls,
            response_format=self.response_format(),
            truncate=self.truncation == "auto",
            logprobs=LOGPROBS in (self.include or ()),
            top_logprobs=self.top_logprobs if LOGPROBS in (self.include or ()) else None,
            **self.serving(),  # type: ignore[arg-type]
            **{k: v for k, v in sampling.items() if v is not None},  # type: ignore[arg-type]
        )

    def response_format(self) -> ResponseFormat | None:
        form = self.text.format if self.text is not None else None
        if form is None or form.type != "json_schema":
            return None if form is None else ResponseFormat(type=form.type)
        schema = JsonSchemaFormat(form.name or "output", form.schema, form.description, form.strict)
        return ResponseFormat(type="json_schema", json_schema=schema)
