"""Tool calling in the Hermes / Qwen format: prompts in, ``<tool_call>`` JSON out.

The model is shown the tools by its own chat template when that template knows
tools (see ``speculative.prompt``); otherwise a system turn describes them in
the same format. It answers a call as

    <tool_call>
    {"name": "get_weather", "arguments": {"city": "Paris"}}
    </tool_call>

which becomes OpenAI's ``message.tool_calls`` (``reply_parser`` reads it out of the
reply, streamed or whole). ``tool_choice: "required"``
or a named function constrains the whole reply with a grammar: one call whose
``arguments`` are an instance of the function's ``parameters`` schema.
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass
from typing import Any

from server.serving.structured import schema_to_gbnf

OPEN, CLOSE = "<tool_call>", "</tool_call>"


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


def decode_call(body: str, names: set[str]) -> ToolCall | None:
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
