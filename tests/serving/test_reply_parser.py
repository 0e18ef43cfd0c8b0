"""The one reply parser: reasoning, content and tool calls, streamed and whole (pure)."""

from __future__ import annotations

from server.serving.chat.reply_events import (
    CallArgs,
    CallStart,
    Content,
    ParsedReply,
    Reasoning,
    ThinkTags,
    think_tags,
)
from server.serving.chat.reply_parser import ReplyParser, parse_reply
from server.serving.chat.tool_calls import ToolCall

THINK = ThinkTags("<think>", "</think>")
CALL = '<tool_call>\n{"name": "f", "arguments": {"a": 1}}\n</tool_call>'


def parse(text: str, **kwargs: object) -> ParsedReply:
    return parse_reply(text, ReplyParser(kwargs.pop("tags", None), **kwargs))  # type: ignore[arg-type]


def streamed(pieces: list[str], parser: ReplyParser) -> tuple[list[object], ParsedReply]:
    events: list[object] = []
    parsed = ParsedReply()
    for piece in pieces:
        out = parser.feed(piece)
        events += out
        parsed.add(out)
    out = parser.finish()
    parsed.add(out)
    return events + out, parsed


def test_calls_and_content() -> None:
    names = {"f"}
    reply = parse(f"Sure.\n{CALL}", tool_names=names)
    assert (reply.text, reply.calls) == ("Sure.", [ToolCall("f", '{"a": 1}')])
    reply = parse(CALL + CALL, tool_names=names)
    assert (reply.text, reply.calls) == (None, [ToolCall("f", '{"a": 1}')] * 2)
    assert parse(CALL + CALL, tool_names=names, max_calls=1).calls == [ToolCall("f", '{"a": 1}')]
    # unterminated at the end of the reply, the arguments as a JSON string
    reply = parse('<tool_call>{"name": "f", "arguments": "{}"}', tool_names=names)
    assert reply.calls == [ToolCall("f", "{}")]
    # keys the other way round: decoded whole at the close
    reply = parse('<tool_call>{"arguments": {"b": 2}, "name": "f"}</tool_call>', tool_names=names)
    assert reply.calls == [ToolCall("f", '{"b": 2}')]


def test_what_is_not_a_known_call_stays_content() -> None:
    for text in (CALL.replace('"f"', '"g"'), "<tool_call>not json</tool_call>", "plain", " "):
        reply = parse(text, tool_names={"f"})
        assert (reply.text, reply.calls) == (text, [])


def test_arguments_stream_as_written_and_join_to_the_whole() -> None:
    arguments = '{"s": "a}\\"{", "n": [1, {"x": 2}]}'
    text = f'Hi <tool_call>\n{{"name": "f", "arguments": {arguments}}}\n</tool_call>'
    whole = parse(text, tool_names={"f"})
    pieces = [text[i : i + 3] for i in range(0, len(text), 3)]
    events, parsed = streamed(pieces, ReplyParser(None, tool_names={"f"}))
    deltas = [e for e in events if isinstance(e, CallArgs)]
    assert len(deltas) > 5  # many deltas, not one per call
    assert whole.calls == parsed.calls == [ToolCall("f", arguments)]
    assert events.index(CallStart(0, "f")) < events.index(deltas[0])
    assert [e for e in events if isinstance(e, Content)] == [Content("Hi ")]


def test_partial_markers_wait_for_the_next_piece() -> None:
    events, parsed = streamed(["a <t", "ag> b"], ReplyParser(None, tool_names={"f"}))
    assert events == [Content("a "), Content("<tag> b")]
    events, parsed = streamed(["x <tool_call>oops"], ReplyParser(None, tool_names={"f"}))
    assert parsed.content == "x <tool_call>oops" and not parsed.calls


def test_think_block_is_reasoning() -> None:
    reply = parse("<think>\nPlan it.\n</think>\n\nThe answer.", tags=THINK)
    assert (reply.reasoning, reply.text) == ("Plan it.", "The answer.")
    # forced open by the prompt: no open tag in the output
    reply = parse("Plan.</think>Done", tags=THINK, is_thinking=True)
    assert (reply.reasoning, reply.text) == ("Plan.", "Done")
    # never closed (max_tokens): all of it is reasoning
    assert parse("<think>still going", tags=THINK).reasoning == "still going"
    # only at the start: a later tag is content, and without tags nothing is split
    assert parse("Hi <think>x</think>", tags=THINK).text == "Hi <think>x</think>"
    assert parse("<think>x</think>y").text == "<think>x</think>y"


def test_reasoning_streams_and_joins_to_the_whole() -> None:
    text = "  <think>\nStep one.\nStep two.  \n</think>\n\nAnswer <tool_call>" + CALL[11:]
    whole = parse(text, tags=THINK, tool_names={"f"})
    for size in (1, 2, 5):
        pieces = [text[i : i + size] for i in range(0, len(text), size)]
        events, parsed = streamed(pieces, ReplyParser(THINK, tool_names={"f"}))
        assert parsed == whole
        assert all(e.text for e in events if isinstance(e, Reasoning | Content))
    assert whole.reasoning == "Step one.\nStep two." and whole.text == "Answer"
    assert whole.calls == [ToolCall("f", '{"a": 1}')]


def test_think_tags_of_templates() -> None:
    assert think_tags("{{ '<think>\\n' }}...</think>") == THINK
    assert think_tags("<|END_THINKING|>") == ThinkTags("<|START_THINKING|>", "<|END_THINKING|>")
    assert think_tags("<|im_start|>") is None and think_tags(None) is None


BARE = '{"name": "f", "arguments": {"a": "}"}}'


def test_a_bare_or_fenced_call_of_a_known_tool_is_a_call() -> None:
    """Qwen2.5 Coder's shapes: the call object as the whole content, or in a json fence;
    streamed a character at a time, the same as whole."""
    names = {"f"}
    for text in (BARE, f"  {BARE}\n", f"```json\n{BARE}\n```", f"```\n{BARE}\n```"):
        whole = parse(text, tool_names=names)
        assert whole.calls == [ToolCall("f", '{"a": "}"}')] and whole.text is None, text
        _, parsed = streamed(list(text), ReplyParser(None, tool_names=names))
        assert (parsed.calls, parsed.content) == (whole.calls, whole.content)
    after = parse(f"{BARE} Done.", tool_names=names)
    assert after.calls == [ToolCall("f", '{"a": "}"}')] and after.text == "Done."


def test_json_and_code_that_are_not_calls_stay_content() -> None:
    names = {"f"}
    for text in (
        '{"answer": 42}',
        '{"name": "g", "arguments": {}}',  # not a known tool
        '```json\n{"a": 1}\n```',
        "```python\nprint(1)\n```\nDone.",
        f"Calling it: {BARE}",  # a bare call only as the content's start
        '{"name": "f", "arguments": {"a": 1',  # never closed
    ):
        assert parse(text, tool_names=names).content == text, text
    assert parse(BARE).content == BARE  # no tools declared: nothing is a call
    # a fence of code goes out as soon as its first line shows it is not a call's
    parser = ReplyParser(None, tool_names=names)
    assert parser.feed("```python\n") == []
    assert parser.feed("print(1)") == [Content("```python\nprint(1)")]
