"""A reply's text, as the model writes it, split into reasoning, content and tool calls.

One parser serves every API family (chat completions, Anthropic, Responses,
Ollama) and both ways a reply leaves: streamed, ``feed`` takes each piece and
returns the events that may go out now; whole, ``parse_reply`` feeds the text in
one piece. So the concatenated stream deltas are the whole reply by construction.

Reasoning is a think block at the start of the reply (``<think>`` ... ``</think>``
or another model's pair, ``think_tags``), or, when the prompt already opened it
(``thinking_forced_open``), everything up to the close tag. Whitespace right
inside the tags and right after the close is dropped, as llama-server does.

A tool call is Hermes' ``<tool_call>{"name": ..., "arguments": {...}}</tool_call>``;
once its name is read, its arguments go out as the model writes them (the JSON
text as is, so the deltas join to the non-streamed ``arguments``). A block whose
header is another shape (keys swapped, arguments as a JSON string) is decoded
whole at its close; one that is not a call of a known tool stays content.

Some models write the call bare instead: Qwen2.5 Coder answers a tool request with
``{"name": ..., "arguments": {...}}``, or that object in a ```json fence, as its whole
content (llama.cpp's Hermes parser takes those too). Content that starts with ``{`` or
a fence is held until its JSON object closes; a call of a known tool with its
arguments is then a call (sent whole), anything else is content.
"""

from __future__ import annotations

import json
import re
from enum import Enum, auto

from server.serving.chat.json_end import JsonEnd, object_end
from server.serving.chat.reply_events import (
    CallArgs,
    CallStart,
    Content,
    Event,
    ParsedReply,
    Reasoning,
    ThinkTags,
)
from server.serving.chat.tool_calls import CLOSE, OPEN, decode_call


class _Mode(Enum):
    START = auto()  # nothing but whitespace yet: a think block may open
    REASONING = auto()
    CONTENT = auto()
    CALL_HEAD = auto()  # after <tool_call>, before the name is read
    ARGS = auto()  # inside the arguments' JSON value
    WHOLE = auto()  # a block decoded at its close (another header shape)
    TAIL = auto()  # after the arguments, up to </tool_call>
    SKIP = auto()  # a call beyond max_calls: dropped
    BARE = auto()  # content that may be a bare call: held until its JSON object closes


_HEADER = re.compile(
    r'\s*\{\s*"name"\s*:\s*("(?:[^"\\]|\\.)*")\s*,\s*"(?:arguments|parameters)"\s*:\s*'
)


class ReplyParser:
    """Feed it text pieces; it says what of them is reasoning, content or a call."""

    def __init__(
        self,
        tags: ThinkTags | None,
        *,
        is_thinking: bool = False,
        tool_names: set[str] | None = None,
        max_calls: int | None = None,
    ) -> None:
        self.tags = tags
        self.names = tool_names
        self.max_calls = max_calls
        self.mode = _Mode.REASONING if is_thinking and tags else _Mode.START
        self.pending = ""
        self.is_trimming = self.mode is _Mode.REASONING  # whitespace to drop at the front
        self.num_calls = 0
        self._args_end = JsonEnd()  # of the arguments' JSON value being streamed
        self._has_content = False  # content went out: a bare call can only come first

    def feed(self, piece: str) -> list[Event]:
        self.pending += piece
        out: list[Event] = []
        while self.pending and self._step(out):
            pass
        return out

    def finish(self) -> list[Event]:
        """What is still held, once the reply has ended."""
        out = self.feed("")
        text, self.pending = self.pending, ""
        mode = self.mode
        if mode is _Mode.REASONING:
            _emit(out, Reasoning(text.rstrip()))
        elif mode in (_Mode.START, _Mode.CONTENT):
            _emit(out, Content(text))
        elif mode in (_Mode.CALL_HEAD, _Mode.WHOLE):
            self._whole_block(text, out)
        elif mode is _Mode.BARE and not self._bare_call(text, out):
            _emit(out, Content(text))
        return out

    def _step(self, out: list[Event]) -> bool:
        """Consume what the mode can of ``pending``; False: wait for more text."""
        if self.is_trimming:
            self.pending = self.pending.lstrip()
            if not self.pending:
                return False
            self.is_trimming = False
        mode = self.mode
        if mode is _Mode.START:
            return self._start()
        if mode is _Mode.REASONING:
            return self._reasoning(out)
        if mode is _Mode.CONTENT:
            return self._content(out)
        if mode is _Mode.CALL_HEAD:
            return self._head(out)
        if mode is _Mode.ARGS:
            return self._args(out)
        if mode is _Mode.BARE:
            return self._bare(out)
        return self._until_close(out)

    def _start(self) -> bool:
        text = self.pending.lstrip()
        if self.tags is None:
            self.mode = _Mode.CONTENT
        elif text.startswith(self.tags.open):
            self.pending = text[len(self.tags.open) :]
            self.mode, self.is_trimming = _Mode.REASONING, True
        elif self.tags.open.startswith(text):
            return False  # the open tag may be coming
        else:
            self.mode = _Mode.CONTENT
        return True

    def _reasoning(self, out: list[Event]) -> bool:
        assert self.tags is not None
        close = self.tags.close
        at = self.pending.find(close)
        if at >= 0:
            _emit(out, Reasoning(self.pending[:at].rstrip()))
            self.pending = self.pending[at + len(close) :]
            self.mode, self.is_trimming = _Mode.CONTENT, True
            return True
        # hold a possible start of the close tag, and whitespace that may end the block
        keep = _partial(self.pending, close)
        sendable = self.pending[: len(self.pending) - keep].rstrip()
        _emit(out, Reasoning(sendable))
        self.pending = self.pending[len(sendable) :]
        return False

    def _content(self, out: list[Event]) -> bool:
        if self.names is None:
            _emit(out, Content(self.pending))
            self.pending = ""
            return False
        if not self._has_content and self.num_calls == 0:
            start = self.pending.lstrip()
            if start.startswith(("{", FENCE)):
                self.mode = _Mode.BARE
                return True
            if not start or FENCE.startswith(start):
                return False  # a fence may be opening
            self._has_content = True
        at = self.pending.find(OPEN)
        if at >= 0:
            _emit(out, Content(self.pending[:at]))
            self.pending = self.pending[at + len(OPEN) :]
            is_over = self.max_calls is not None and self.num_calls >= self.max_calls
            self.mode = _Mode.SKIP if is_over else _Mode.CALL_HEAD
            return True
        keep = _partial(self.pending, OPEN)
        _emit(out, Content(self.pending[: len(self.pending) - keep]))
        self.pending = self.pending[len(self.pending) - keep :]
        return False

    def _head(self, out: list[Event]) -> bool:
        assert self.names is not None
        match = _HEADER.match(self.pending)
        if match is None or not self.pending[match.end() :].strip():
            if CLOSE in self.pending:  # not the usual header: decode the block whole
                self.mode = _Mode.WHOLE
                return True
            return False  # wait: the header, or the arguments' first character, may come
        name = json.loads(match.group(1))
        rest = self.pending[match.end() :]
        if name not in self.names or rest[0] not in "{[":
            self.mode = _Mode.WHOLE  # content, or arguments as a JSON string
            return True
        _emit(out, CallStart(self.num_calls, name))
        self.num_calls += 1
        self.pending, self.mode = rest, _Mode.ARGS
        self._args_end = JsonEnd()
        return True

    def _args(self, out: list[Event]) -> bool:
        """Send the arguments' characters up to the end of their JSON value."""
        end = self._args_end.find(self.pending)
        if end is not None:
            _emit(out, CallArgs(self.num_calls - 1, self.pending[:end]))
            self.pending, self.mode = self.pending[end:], _Mode.TAIL
            return True
        _emit(out, CallArgs(self.num_calls - 1, self.pending))
        self.pending = ""
        return False

    def _bare(self, out: list[Event]) -> bool:
        """Hold content until its JSON object (in a fence or not) closes, then decide."""
        text = self.pending.lstrip()
        fenced = text.startswith(FENCE)
        body = text.split("\n", 1)[1] if fenced and "\n" in text else ("" if fenced else text)
        head = text.split("\n", 1)[0] if fenced else ""
        if fenced and (head.strip() not in (FENCE, FENCE + "json") or body.lstrip()[:1] not in "{"):
            if "\n" not in text or not body.strip():
                return False  # the fence's first line, or what follows it, is coming
            self.mode, self._has_content = _Mode.CONTENT, True  # a fence of something else
            return True
        end = object_end(body.lstrip())
        if end is None:
            return False  # wait for the object's close (finish decides if none comes)
        offset = len(text) - len(body.lstrip())
        consumed = offset + end
        if fenced:
            rest = text[consumed:]
            if FENCE not in rest:
                return False  # the fence's close may come
            consumed += rest.index(FENCE) + len(FENCE)
        self.pending = text[consumed:]
        self.mode, self._has_content = _Mode.CONTENT, True
        if not self._bare_call(text[:consumed], out):
            _emit(out, Content(text[:consumed]))
        return True

    def _bare_call(self, text: str, out: list[Event]) -> bool:
        """``text`` (an object, perhaps fenced) as a call of a known tool, if it is one."""
        assert self.names is not None
        body = text.strip()
        if body.startswith(FENCE):
            body = body.split("\n", 1)[1] if "\n" in body else ""
            body = body.rstrip().removesuffix(FENCE)
        match = _HEADER.match(body)
        call = decode_call(body.strip(), self.names) if match else None
        over = self.max_calls is not None and self.num_calls >= self.max_calls
        if call is None or over:
            return False
        _emit(out, CallStart(self.num_calls, call.name))
        _emit(out, CallArgs(self.num_calls, call.arguments))
        self.num_calls += 1
        return True

    def _until_close(self, out: list[Event]) -> bool:
        """TAIL, SKIP and WHOLE: wait for </tool_call>, then back to content."""
        at = self.pending.find(CLOSE)
        if at < 0:
            return False
        block, self.pending = self.pending[:at], self.pending[at + len(CLOSE) :]
        if self.mode is _Mode.WHOLE:
            self._whole_block(block, out, closed=True)
        self.mode = _Mode.CONTENT
        return True

    def _whole_block(self, block: str, out: list[Event], *, closed: bool = False) -> None:
        assert self.names is not None
        call = decode_call(block.strip(), self.names)
        if call is None:  # not a call after all: the block is content
            _emit(out, Content(OPEN + block + (CLOSE if closed else "")))
            return
        _emit(out, CallStart(self.num_calls, call.name))
        _emit(out, CallArgs(self.num_calls, call.arguments))
        self.num_calls += 1


def _emit(out: list[Event], event: Event) -> None:
    """Append ``event`` unless it carries no text."""
    if isinstance(event, CallStart) or (event.delta if isinstance(event, CallArgs) else event.text):
        out.append(event)


FENCE = "```"


def _partial(text: str, marker: str) -> int:
    """How many characters at the end of ``text`` may begin ``marker``."""
    return next((k for k in range(len(marker) - 1, 0, -1) if text.endswith(marker[:k])), 0)


def parse_reply(text: str, parser: ReplyParser) -> ParsedReply:
    """A whole reply through ``parser`` (a fresh one)."""
    parsed = ParsedReply()
    parsed.add(parser.feed(text))
    parsed.add(parser.finish())
    return parsed
