"""OpenAI's reply objects for one request (a chat completion or a text completion), whole
or as stream chunks: the choice, its envelope, and the deltas a parsed reply makes."""

from __future__ import annotations

import time
from typing import Any

from batching.request import Request
from server.serving.chat.reply_events import CallArgs, CallStart, Content, Event, Reasoning
from server.serving.chat.reply_parser import ReplyParser, parse_reply
from server.serving.chat.tool_calls import ToolCall
from server.serving.finish import Family, finish_reason
from server.serving.logprobs import LogprobCursor


class ReplyShape:
    """OpenAI's reply objects for one request, whole or as stream chunks."""

    def __init__(
        self,
        id: str,
        kind: str,
        request: Request,
        logprobs: LogprobCursor,
        *,
        index: int,
        parser: ReplyParser | None = None,
    ) -> None:
        self.id = id
        self.kind = kind
        self.chat = kind.startswith("chat")
        self.logprobs = logprobs
        self.index = index
        self.request = request
        self.created = int(time.time())
        self.parser = parser  # chat only: reasoning and tool calls parsed out
        self.calls: list[str] = []  # names of the calls streamed so far

    def envelope(self, choices: list[dict[str, Any]], *, chunk: bool) -> dict[str, Any]:
        kind = self.kind + ".chunk" if chunk and self.chat else self.kind
        return {
            "id": self.id,
            "object": kind,
            "created": self.created,
            "model": self.request.model,
            "choices": choices,
        }

    def choice(
        self,
        text: str | None,
        finish: str | None,
        *,
        chunk: bool,
        delta: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """A choice; with logprobs asked for, it carries those of tokens not yet sent."""
        if not self.chat:
            logprobs = self.logprobs.completion()
            return {
                "index": self.index,
                "text": text or "",
                "logprobs": logprobs,
                "finish_reason": finish,
            }
        logprobs = self.logprobs.chat()
        if delta is None:
            delta = {} if text is None else {"content": text}
        key = "delta" if chunk else "message"
        return {"index": self.index, key: delta, "logprobs": logprobs, "finish_reason": finish}

    def finish_reason(self, has_calls: bool = False) -> str:
        return finish_reason(Family.OPENAI, self.request, has_calls)

    def whole(self) -> dict[str, Any]:
        """The finished choice, its reasoning and tool calls parsed out of the text."""
        if self.parser is None:
            return self.choice(self.request.text, self.finish_reason(), chunk=False)
        reply = parse_reply(self.request.text, self.parser)
        message: dict[str, Any] = {"role": "assistant", "content": reply.text}
        message |= _reasoning(reply.reasoning)
        if reply.calls:
            message["tool_calls"] = [call.as_openai() for call in reply.calls]
        return self.choice(None, self.finish_reason(bool(reply.calls)), chunk=False, delta=message)

    def stream_deltas(self, piece: str | None) -> list[dict[str, Any]]:
        """The deltas a streamed piece makes (None: the stream ended)."""
        if self.parser is None:
            return [{"content": piece}] if piece else []
        events = self.parser.feed(piece) if piece is not None else self.parser.finish()
        return [self._delta(event) for event in events]

    def _delta(self, event: Event) -> dict[str, Any]:
        if isinstance(event, Content):
            return {"content": event.text}
        if isinstance(event, Reasoning):
            return _reasoning(event.text)
        if isinstance(event, CallStart):
            self.calls.append(event.name)
            call = ToolCall(event.name, "").as_openai(event.index)
            return {"tool_calls": [call]}
        assert isinstance(event, CallArgs)
        return {"tool_calls": [{"index": event.index, "function": {"arguments": event.delta}}]}


def _reasoning(text: str) -> dict[str, Any]:
    """llama-server's reasoning_content, and vLLM's reasoning, when there is some."""
    return {"reasoning_content": text, "reasoning": text} if text else {}
