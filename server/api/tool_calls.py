"""Tool calling in the Hermes / Qwen format: prompts in, ``<tool_call>`` JSON out.

The model is shown the tools by its own chat template when that template knows
tools (see ``speculative.prompt``); otherwise a system turn describes them in
the same format. It answers a call as

    <tool_call>
    {"name": "get_weather", "arguments": {"city": "Paris"}}
    </tool_call>

which becomes OpenAI's ``message.tool_calls``. ``tool_choice: "required"``
or a named function constrains the whole reply with a grammar: one call whose
``arguments`` are an instance of the function's ``parameters`` schema.
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass
from typing import Any

from server.api.structured import schema_to_gbnf

OPEN, CLOSE = "<tool_call>", "</tool_call>"
_CALL = re.compile(r"<tool_call>\s*(.*?)\s*(?:</tool_call>|$)", re.DOTALL)


@dataclass(slots=True, frozen=True)
class ToolCall:
    name: str
    arguments: str  # JSON text, as OpenAI sends it

    def as_openai(self, index: int | None = None) -> dict[str, Any]:
        call: dict[str, Any] = {
            "id": "call_" + uuid.uuid4().hex[:24],
            "type": "function",
            "function": {"name": self.name, "arguments": self.arguments},
        }
        return call if index is None else {"index": index, **call}


def parse_tool_calls(text: str, names: set[str]) -> tuple[str | None, list[ToolCall]]:
    """``text`` split into its content and the calls it makes of the ``names`` tools.

    A ``<tool_call>`` block that is not JSON naming a known tool stays content;
    so does everything when nothing parses.
    """
    calls: list[ToolCall] = []
    content: list[str] = []
    end = 0
    for match in _CALL.finditer(text):
        call = _decode_call(match.group(1), names)
        if call is None:
            continue
        content.append(text[end : match.start()])
        end = match.end()
        calls.append(call)
    content.append(text[end:])
    rest = "".join(content).strip() if calls else text
    return (rest or None) if calls else text, calls


def _decode_call(body: str, names: set[str]) -> ToolCall | None:
    try:
        data = json.loads(body)
    except ValueError:
        return None
    if not isinstance(data, dict) or data.get("name") not in names:
        return None
    arguments = data.get("arguments", data.get("parameters", {}))
    if isinstance(arguments, str):  # some models send the JSON text itself
        return ToolCall(data["name"], arguments)
    return ToolCall(data["name"], json.dumps(arguments, ensure_ascii=False))


class ContentFilter:
    """Streamed text with ``<tool_call>`` blocks held back for ``finish``.

    ``feed`` returns what may be sent as content now: all text up to a possible
    start of ``<tool_call>`` (a partial marker waits for the next piece).
    """

    def __init__(self, names: set[str]) -> None:
        self.names = names
        self.held = ""
        self.is_in_call = False

    def feed(self, piece: str) -> str:
        text = self.held + piece
        if self.is_in_call:
            self.held = text
            return ""
        start = text.find(OPEN)
        if start >= 0:
            self.is_in_call = True
            self.held = text[start:]
            return text[:start]
        keep = next((k for k in range(len(OPEN) - 1, 0, -1) if text.endswith(OPEN[:k])), 0)
        self.held = text[len(text) - keep :]
        return text[: len(text) - keep]

    def finish(self) -> tuple[str, list[ToolCall]]:
        """What is left to send as content, and the calls."""
        content, calls = parse_tool_calls(self.held, self.names)
        if not calls:  # not a call after all: the held text is content
            return self.held, []
        return content or "", calls


def tools_system_prompt(tools: list[dict[str, Any]]) -> str:
    """Hermes' tool instructions, for a model whose template does not render tools."""
    listed = "\n".join(json.dumps(tool, ensure_ascii=False) for tool in tools)
    return (
        "You may call one or more functions to assist with the user query.\n\n"
        "You are provided with function signatures within <tools></tools> XML tags:\n"
        f"<tools>\n{listed}\n</tools>\n\n"
        "For each function call, return a json object with function name and arguments "
        "within <tool_call></tool_call> XML tags:\n"
        '<tool_call>\n{"name": <function-name>, "arguments": <args-json-object>}\n</tool_call>'
    )


def call_grammar(functions: list[dict[str, Any]], field: str) -> str:
    """GBNF for one ``<tool_call>`` of one of ``functions`` with schema-valid arguments."""
    options = []
    for function in functions:
        parameters = function.get("parameters") or {"type": "object"}
        options.append(
            {
                "type": "object",
                "properties": {"name": {"const": function["name"]}, "arguments": parameters},
                "required": ["name", "arguments"],
            }
        )
    schema = options[0] if len(options) == 1 else {"anyOf": options}
    grammar = schema_to_gbnf(schema, field)
    # the schema's root becomes the JSON inside the markers
    call = re.sub(r"^root ::=", "call ::=", grammar, count=1, flags=re.MULTILINE)
    assert call != grammar, "the converter names its start rule root"
    return f'root ::= "{OPEN}\\n" call "\\n{CLOSE}"\n{call}'
