"""Hermes tool-call parsing, the streaming filter and the call grammar (pure functions)."""

from __future__ import annotations

import json

from server.api.tool_calls import ContentFilter, ToolCall, call_grammar, parse_tool_calls

CALL = '<tool_call>\n{"name": "f", "arguments": {"a": 1}}\n</tool_call>'


def test_parse_calls_and_content() -> None:
    assert parse_tool_calls(f"Sure.\n{CALL}", {"f"}) == ("Sure.", [ToolCall("f", '{"a": 1}')])
    assert parse_tool_calls(CALL + CALL, {"f"}) == (None, [ToolCall("f", '{"a": 1}')] * 2)
    # unterminated at the end of the reply (the model stopped after the JSON)
    assert parse_tool_calls('<tool_call>{"name": "f", "arguments": "{}"}', {"f"})[1] == [
        ToolCall("f", "{}")
    ]


def test_what_is_not_a_known_call_stays_content() -> None:
    for text in (CALL.replace('"f"', '"g"'), "<tool_call>not json</tool_call>", "plain"):
        assert parse_tool_calls(text, {"f"}) == (text, [])


def test_filter_holds_back_calls_and_partial_markers() -> None:
    held = ContentFilter({"f"})
    pieces = ["Hel", "lo <", "tool", "_call>\n", '{"name": "f", "arguments": {}}', "\n</tool_call>"]
    assert [held.feed(p) for p in pieces] == ["Hel", "lo ", "", "", "", ""]
    assert held.finish() == ("", [ToolCall("f", "{}")])
    # a "<t" that turns out not to start a call is sent with the next piece
    held = ContentFilter({"f"})
    assert [held.feed(p) for p in ["a <t", "ag> b"]] == ["a ", "<tag> b"]
    assert held.finish() == ("", [])
    held = ContentFilter({"f"})
    assert held.feed("x <tool_call>oops") == "x "
    assert held.finish() == ("<tool_call>oops", [])


def test_call_grammar_wraps_the_schema_in_markers() -> None:
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}}
    grammar = call_grammar([{"name": "f", "parameters": schema}], "tools")
    root = grammar.splitlines()[0]
    assert root == 'root ::= "<tool_call>\\n" call "\\n</tool_call>"'
    assert "call ::=" in grammar and json.dumps('"f"')[1:-1] in grammar
    both = call_grammar([{"name": "f", "parameters": None}, {"name": "g", "parameters": None}], "t")
    assert '\\"f\\"' in both and '\\"g\\"' in both
