"""The tool-call grammar (the parsing is tests/serving/test_reply_parser.py)."""

from __future__ import annotations

import json

from server.serving.chat.tool_calls import call_grammar


def test_call_grammar_wraps_the_schema_in_markers() -> None:
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}}
    grammar = call_grammar([{"name": "f", "parameters": schema}], "tools")
    root = grammar.splitlines()[0]
    assert root == 'root ::= "<tool_call>\\n" call "\\n</tool_call>"'
    assert "call ::=" in grammar and json.dumps('"f"')[1:-1] in grammar
    both = call_grammar([{"name": "f", "parameters": None}, {"name": "g", "parameters": None}], "t")
    assert '\\"f\\"' in both and '\\"g\\"' in both
