"""A chat-completions body with tools made into a prompt, a grammar and a tool set.

A chat without tools, tool calls or tool turns keeps the plain (role, content)
path; one with them goes to the model's Jinja template (``JinjaChat``), with a
fallback for templates that cannot render tools: a system turn describing them
(``tools_system_prompt``), calls and results written out as Hermes' markers.
"""

from __future__ import annotations

import json
from typing import Any

from server.errors import ApiError
from server.prompts import Prefill, Trimmable
from server.serving.chat.ask import ChatAsk
from server.serving.chat.messages import ChatMessage, NamedToolChoice
from server.serving.chat.reply_events import think_tags
from server.serving.chat.tool_calls import CLOSE, OPEN, call_grammar, tools_system_prompt
from speculative.llama import LlamaModel
from speculative.prompt import JinjaChat, Messages


def active_tools(body: ChatAsk) -> list[dict[str, Any]] | None:
    """The tools the model is shown (none with ``tool_choice: "none"``), as plain JSON."""
    if not body.tools or body.tool_choice == "none":
        return None
    tools = []
    for tool in body.tools:
        function: dict[str, Any] = {"name": tool.function.name}
        if tool.function.description is not None:
            function["description"] = tool.function.description
        function["parameters"] = tool.function.parameters or {"type": "object", "properties": {}}
        tools.append({"type": "function", "function": function})
    return tools


def tool_names(body: ChatAsk) -> set[str] | None:
    """Names whose calls are parsed out of the reply; None: the reply is only content."""
    tools = active_tools(body)
    return None if tools is None else {t["function"]["name"] for t in tools}


def chat_prompt(
    body: ChatAsk, model: LlamaModel, turns: list[ChatMessage] | None = None
) -> Messages | JinjaChat | Prefill:
    """The chat (``body``'s turns, or ``turns`` kept of them) for the model's template; a
    last assistant turn is continued (prefill)."""
    messages, prefill = body.messages if turns is None else turns, None
    if messages[-1].role == "assistant" and not messages[-1].tool_calls:
        if len(messages) > 1 and messages[-2].role == "assistant":
            raise ApiError(
                400,
                "messages: the last assistant turn is continued (prefill), so it cannot "
                "follow another assistant turn; merge them",
            )
        messages, prefill = messages[:-1], messages[-1].text()
    chat = _chat(body, messages, model)
    return chat if prefill is None else Prefill(chat, prefill)


def trimmable_chat(body: ChatAsk, model: LlamaModel) -> Trimmable:
    """The chat, losing whole turns from the oldest (``truncate: true``): a turn is a user
    message and what follows it up to the next one, so no reply loses its question; the
    leading system turns and the newest turn are always kept (as llama-server's
    --chat-truncate does)."""
    messages = body.messages
    head = 0
    while head < len(messages) and messages[head].role in ("system", "developer"):
        head += 1
    cuts = [i for i in range(head + 1, len(messages)) if messages[i].role == "user"]

    def build(num_dropped: int) -> Messages | JinjaChat | Prefill:
        if num_dropped == 0:
            return chat_prompt(body, model)
        kept = messages[:head] + messages[cuts[num_dropped - 1] :]
        return chat_prompt(body, model, kept)

    return Trimmable(build, len(cuts))


def _chat(body: ChatAsk, messages: list[ChatMessage], model: LlamaModel) -> Messages | JinjaChat:
    turns = [(_role(m), m.text()) for m in messages]
    tools = active_tools(body)
    has_tool_turns = any(m.role == "tool" or m.tool_calls for m in messages)
    kwargs = body.template_kwargs()
    # a thinking template decides at the generation prompt whether the model thinks,
    # which llama.cpp's built-in renderer does not know: it gets the Jinja template
    thinks = think_tags(model.template_text) is not None
    if tools is None and not has_tool_turns and not kwargs and not thinks:
        return turns
    check_markup(model, body, tools)
    jinja = [_jinja_message(m) for m in messages]
    return JinjaChat(jinja, tools, _fallback(messages, tools), kwargs)


def tool_grammar(body: ChatAsk) -> str | None:
    """With ``required`` or a named function: one call, arguments valid for its schema."""
    if body.tools is None or body.tool_choice in (None, "none", "auto"):
        return None
    functions = [t.function for t in body.tools]
    if isinstance(body.tool_choice, NamedToolChoice):
        functions = [f for f in functions if f.name == body.tool_choice.function.name]
    schemas = [{"name": f.name, "parameters": f.parameters} for f in functions]
    try:
        return call_grammar(schemas, "tools[].function.parameters")
    except ValueError as exc:
        raise ApiError(400, str(exc)) from None


def check_markup(model: LlamaModel, body: ChatAsk, tools: object) -> None:
    """Tool definitions and earlier calls are written into the template's own text, which
    is tokenized with control tokens parsed: they must not smuggle one in."""
    written = [("tools", json.dumps(tools))]
    for name, value in body.template_kwargs().items():
        written.append((f"chat_template_kwargs.{name}", json.dumps(value)))
    for i, message in enumerate(body.messages):
        for j, call in enumerate(message.tool_calls or []):
            where = f"messages[{i}].tool_calls[{j}]"
            written.append(
                (where, json.dumps([call.id, call.function.name, call.function.arguments]))
            )
        if message.tool_call_id is not None:
            written.append((f"messages[{i}].tool_call_id", message.tool_call_id))
    for where, text in written:
        if model.tokenize(text, parse_special=True, add_special=False) != model.tokenize(
            text, add_special=False
        ):
            raise ApiError(400, f"{where}: must not contain control-token markup")


def _role(message: ChatMessage) -> str:
    return "system" if message.role == "developer" else message.role


def _jinja_message(message: ChatMessage) -> dict[str, Any]:
    # a call-only turn's content is "", not None: templates such as Qwen 3's call string
    # methods on it (llama-server passes "" too)
    out: dict[str, Any] = {"role": _role(message), "content": message.text()}
    if message.tool_calls:
        out["tool_calls"] = [
            {
                "id": call.id,
                "type": "function",
                # Hugging Face templates take the arguments as an object, not JSON text
                "function": {
                    "name": call.function.name,
                    "arguments": _json(call.function.arguments),
                },
            }
            for call in message.tool_calls
        ]
    if message.tool_call_id is not None:
        out["tool_call_id"] = message.tool_call_id
    if message.reasoning_content is not None:  # thinking templates show it or drop it
        out["reasoning_content"] = message.reasoning_content
    if message.name is not None:
        out["name"] = message.name
    return out


def _fallback(messages: list[ChatMessage], tools: list[dict[str, Any]] | None) -> Messages:
    """The chat for the built-in renderer: calls and results as Hermes' markers in text."""
    turns: list[tuple[str, str]] = []
    for message in messages:
        text = message.text()
        if message.tool_calls:
            calls = [
                f'{OPEN}\n{{"name": {json.dumps(c.function.name)}, "arguments": '
                f"{c.function.arguments}}}\n{CLOSE}"
                for c in message.tool_calls
            ]
            text = "\n".join([text, *calls] if text else calls)
        if message.role == "tool":
            turns.append(("user", f"<tool_response>\n{text}\n</tool_response>"))
        else:
            turns.append((_role(message), text))
    if tools is not None:
        instructions = tools_system_prompt(tools)
        if turns and turns[0][0] == "system":
            turns[0] = ("system", f"{turns[0][1]}\n\n{instructions}")
        else:
            turns.insert(0, ("system", instructions))
    return turns


def _json(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text
