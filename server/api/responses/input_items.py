"""The items of a Responses ``input``, and the chat turns they become: ``message`` items
turns, ``function_call`` items an assistant turn's ``tool_calls`` (a run of
them one turn), ``function_call_output`` items ``tool`` turns, ``reasoning``
items dropped.
"""

from __future__ import annotations

from dataclasses import dataclass

from server.schema import spec
from server.serving.chat.messages import ChatMessage, FunctionCall, ToolCallItem


@dataclass(slots=True, frozen=True)
class InputContentPart:
    """Text of a message item (input_text, output_text), or of a reasoning item
    (reasoning_text, summary_text: a reply's reasoning sent back, dropped)."""

    type: str = spec(
        doc="input_text or output_text; reasoning items: reasoning_text or summary_text",
        choices=("input_text", "output_text", "reasoning_text", "summary_text"),
    )
    text: str = spec(doc="the text")
    annotations: list[object] | None = spec(None, doc="accepted and not used")
    logprobs: list[object] | None = spec(None, doc="accepted and not used")
    prompt_cache_breakpoint: object = spec(None, doc="accepted; the prefix cache is automatic")


@dataclass(slots=True, frozen=True)
class InputItem:
    """A message, a function call, its output, or a reasoning item (dropped)."""

    type: str = spec(
        "message",
        doc="message (the default), function_call, function_call_output or reasoning",
        choices=("message", "function_call", "function_call_output", "reasoning"),
    )
    role: str | None = spec(
        None, doc="message: who speaks", choices=("user", "assistant", "system", "developer")
    )
    content: str | list[InputContentPart] | None = spec(None, doc="message: the text or its parts")
    call_id: str | None = spec(None, doc="function_call(_output): the call")
    name: str | None = spec(None, doc="function_call: the function")
    arguments: str | None = spec(None, doc="function_call: the arguments as JSON text")
    output: str | list[InputContentPart] | None = spec(None, doc="function_call_output: the result")
    id: str | None = spec(None, doc="the item's id (accepted)")
    status: str | None = spec(None, doc="accepted")
    summary: list[object] | None = spec(None, doc="reasoning: accepted and dropped")
    encrypted_content: str | None = spec(None, doc="reasoning: accepted and dropped")
    caller: object = spec(None, doc="function_call(_output): accepted and not shown")
    namespace: str | None = spec(None, doc="function_call(_output): accepted and not shown")
    phase: str | None = spec(None, doc="message: accepted and not shown")
    is_async: bool | None = spec(None, wire="async", doc="function_call: accepted")

    def __post_init__(self) -> None:
        needs = {"message": ("role", "content"), "function_call": ("call_id", "name", "arguments")}
        needs |= {"function_call_output": ("call_id", "output")}
        for name in needs.get(self.type, ()):
            if getattr(self, name) is None:
                raise ValueError(f"input: a {self.type} item needs {name!r}")

    def text(self) -> str:
        value = self.content if self.type == "message" else self.output
        return value if isinstance(value, str) else "".join(p.text for p in value or [])


def chat_messages(items: list[InputItem]) -> list[ChatMessage]:
    out: list[ChatMessage] = []
    calls: list[ToolCallItem] = []  # a run of function_call items: one assistant turn
    text = ""  # an assistant message just before them, which made those calls

    def flush() -> None:
        nonlocal text
        if calls:
            out.append(ChatMessage("assistant", text or None, tool_calls=list(calls)))
            calls.clear()
            text = ""

    for item in items:
        if item.type == "function_call":
            if not calls and out and out[-1].role == "assistant" and not out[-1].tool_calls:
                text = out.pop().text()
            calls.append(
                ToolCallItem(
                    item.call_id or "", FunctionCall(item.name or "", item.arguments or "")
                )
            )
            continue
        flush()
        if item.type == "function_call_output":
            out.append(ChatMessage("tool", item.text(), tool_call_id=item.call_id))
        elif item.type == "message":
            out.append(ChatMessage(item.role or "user", item.text()))
    flush()
    return out
