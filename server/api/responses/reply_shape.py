"""The Response object of one request, its output items (a message, a reasoning item, a
function call), and the stream of Responses events ``routes`` sends while it is made."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

from batching.request import Request
from server.api.chat_run import stream_chat_alive
from server.api.responses.echo import echo
from server.api.responses.schemas import ResponsesBody
from server.api.sse import named_event
from server.errors import ApiError
from server.serving.blocks import Blocks
from server.serving.chat.reply import ChatReply, ChatRun
from server.serving.chat.reply_events import CallArgs, CallStart, Content, Reasoning
from server.serving.chat.tool_calls import ToolCall
from server.serving.finish import WIRE, Family
from server.serving.logprobs import LogprobCursor
from server.serving.streams import Progress
from server.serving.timings import timings


def message_item(
    id: str, text: str | None, status: str, logprobs: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    part = {"type": "output_text", "text": text, "annotations": [], "logprobs": logprobs or []}
    content = [] if text is None else [part]
    return {"type": "message", "id": id, "status": status, "role": "assistant", "content": content}


def reasoning_item(id: str, text: str) -> dict[str, Any]:
    content = [{"type": "reasoning_text", "text": text}]
    return {"type": "reasoning", "id": id, "summary": [], "content": content}


def call_item(call: ToolCall, arguments: str | None = None) -> dict[str, Any]:
    return {
        "type": "function_call",
        "id": "fc_" + uuid.uuid4().hex[:24],
        "call_id": call.as_openai()["id"],
        "name": call.name,
        "arguments": call.arguments if arguments is None else arguments,
        "status": "completed" if arguments is None else "in_progress",
    }


def usage(request: Request) -> dict[str, Any]:
    cached = request.num_cached_tokens
    return {
        "input_tokens": request.num_prompt_tokens,
        # nothing is written to a cache apart from the prefix cache's own: no write count
        "input_tokens_details": {"cached_tokens": cached, "cache_write_tokens": 0},
        "output_tokens": request.num_output_tokens,
        "output_tokens_details": {"reasoning_tokens": 0},  # not counted apart
        "total_tokens": request.num_prompt_tokens + request.num_output_tokens,
    }


class ReplyShape:
    """The Response object of one request, and its stream of events."""

    def __init__(self, body: ResponsesBody, run: ChatRun) -> None:
        self.body = body
        self.run = run
        self.id = "resp_" + run.request.id
        self.message_id = "msg_" + run.request.id
        self.reasoning_id = "rs_" + run.request.id
        self.output: list[dict[str, Any]] = []  # the items done, while streaming
        # the output items as they stream: one open at a time
        self.items: Blocks[dict[str, Any], bytes] = Blocks(
            lambda item: str(item["type"]), self._opened, self._closed
        )
        self.created_at = int(time.time())
        self.num_events = 0
        self.final: dict[str, Any] | None = None  # the Response a stream ended with
        self.cursor = LogprobCursor(run.loaded.model, run.request)
        self.keepalive_s: float | None = None  # a comment while no event is due
        self.logprobs: list[dict[str, Any]] = []  # handed out so far (include: logprobs)

    def timings(self) -> dict[str, Any]:
        """llama-server's telemetry: the timings so far, where the body asked for them."""
        return {"timings": timings(self.run.request)} if self.body.timings_per_token else {}

    def new_logprobs(self) -> list[dict[str, Any]]:
        """The logprobs of the tokens since the last call (none unless asked for)."""
        taken = self.cursor.chat()
        entries: list[dict[str, Any]] = taken["content"] if taken else []
        self.logprobs += entries
        return entries

    def all_logprobs(self) -> list[dict[str, Any]]:
        self.new_logprobs()
        return self.logprobs

    def response(self, reply: ChatReply | None, output: list[dict[str, Any]]) -> dict[str, Any]:
        body = self.body
        status = "in_progress" if reply is None else WIRE[Family.RESPONSES][reply.ending]
        incomplete = {"reason": "max_output_tokens"} if status == "incomplete" else None
        return {
            "id": self.id,
            "object": "response",
            "created_at": self.created_at,
            "status": status,
            "model": self.run.request.model,
            "output": output,
            "usage": usage(self.run.request) if reply is not None else None,
            "error": None,
            "incomplete_details": incomplete,
            **echo(body),
        }

    def event(self, kind: str, **fields: Any) -> bytes:
        self.num_events += 1
        return named_event(kind, {"type": kind, "sequence_number": self.num_events - 1, **fields})

    def _opened(self, index: int, item: dict[str, Any]) -> list[bytes]:
        """An output item opens (with its content part, if it has one)."""
        frames = [self.event("response.output_item.added", output_index=index, item=item)]
        if item["type"] == "message":
            part = {"type": "output_text", "text": "", "annotations": []}
            frames.append(self.event("response.content_part.added", **self._at(item), part=part))
        return frames

    @property
    def at(self) -> dict[str, Any]:
        assert self.items.open is not None
        return self._at(self.items.open)

    def _at(self, item: dict[str, Any]) -> dict[str, Any]:
        """Where an event of ``item`` (the next output item) points."""
        at = {"item_id": item["id"], "output_index": len(self.output)}
        return at if item["type"] == "function_call" else at | {"content_index": 0}

    def _new_item(self, kind: str) -> dict[str, Any]:
        if kind == "reasoning":
            return reasoning_item(self.reasoning_id, "") | {"content": []}
        return message_item(self.message_id, None, "in_progress")

    def add(self, kind: str, text: str) -> list[bytes]:
        """A delta into the open item, opening one of ``kind`` if another is open."""
        frames = self.items.into(kind, lambda: self._new_item(kind))
        item = self.items.open
        assert item is not None
        item["text"] = item.get("text", "") + text
        extra: dict[str, Any] = {}
        if kind == "message":
            name, extra = "response.output_text.delta", {"logprobs": self.new_logprobs()}
            extra |= self.timings()
        elif kind == "reasoning":
            name = "response.reasoning_text.delta"
        else:
            name = "response.function_call_arguments.delta"
        return [*frames, self.event(name, **self.at, delta=text, **extra)]

    def _closed(self, index: int, item: dict[str, Any]) -> list[bytes]:
        """An output item is done: its last events, and it joins the output."""
        at, text = self._at(item), item.pop("text", "")
        frames = []
        if item["type"] == "message":
            logprobs = self.all_logprobs()
            done_text = self.event("response.output_text.done", **at, text=text, logprobs=logprobs)
            item = message_item(self.message_id, text, "completed", logprobs)
            frames.append(done_text)
            part = item["content"][0]
            frames.append(self.event("response.content_part.done", **at, part=part))
        elif item["type"] == "reasoning":
            frames.append(self.event("response.reasoning_text.done", **at, text=text))
            item = reasoning_item(self.reasoning_id, text)
        else:
            frames.append(self.event("response.function_call_arguments.done", **at, arguments=text))
            item = item | {"arguments": text, "status": "completed"}
        self.output.append(item)  # the index-th item
        return [*frames, self.event("response.output_item.done", output_index=index, item=item)]

    async def events(self) -> AsyncIterator[bytes]:
        yield self.event("response.created", response=self.response(None, []))
        yield self.event("response.in_progress", response=self.response(None, []))
        async for piece in stream_chat_alive(self.run, self.keepalive_s):
            frames: list[bytes] = []
            if isinstance(piece, Progress):
                if piece.processed is None:  # queued, or a long prompt read: keep alive
                    yield b": keep-alive\n\n"
                elif self.body.return_progress:  # llama-server's prompt_progress
                    progress = piece.fields(self.run.request)
                    response = self.response(None, self.output)
                    yield self.event(
                        "response.in_progress",
                        response=response,
                        prompt_progress=progress,
                        **self.timings(),
                    )
                continue
            if isinstance(piece, Reasoning):
                frames = self.add("reasoning", piece.text)
            elif isinstance(piece, Content):
                frames = self.add("message", piece.text)
            elif isinstance(piece, CallStart):
                frames = self.items.start(call_item(ToolCall(piece.name, ""), arguments=""))
            elif isinstance(piece, CallArgs):
                frames = self.add("function_call", piece.delta)
            elif isinstance(piece, ApiError):  # failed, or past its deadline
                code = "server_error" if piece.status >= 500 else "invalid_prompt"
                yield self.event("error", code=code, message=piece.message, param=None)
                error = {"code": code, "message": piece.message}  # the items done so far
                self.final = self.response(None, self.output) | {"status": "failed", "error": error}
                yield self.event("response.failed", response=self.final)
                return
            else:
                if not self.items.num_started:  # an empty reply has one message
                    frames = self.items.start(message_item(self.message_id, None, "in_progress"))
                frames += self.items.close()
                final = self.final = self.response(piece, self.output)
                incomplete = final["status"] == "incomplete"
                kind = "response.incomplete" if incomplete else "response.completed"
                frames.append(self.event(kind, response=final, **self.timings()))
            for frame in frames:
                yield frame
