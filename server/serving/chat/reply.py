"""A chat run and how its reply ends, without HTTP: what every chat family renders.

``server.api.chat_run`` starts and streams a run (it reads the HTTP request);
the reply it ends with, its finish, and the counts families report are here.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from batching.request import Request
from server.models.loaded import LoadedModel
from server.serving.chat.reply_events import ParsedReply
from server.serving.chat.reply_parser import ReplyParser
from server.serving.chat.tool_calls import ToolCall
from server.serving.finish import Ending, ending


@dataclass(slots=True)
class ChatRun:
    """A submitted chat request and the parser of its reply (reasoning, content, calls)."""

    loaded: LoadedModel
    request: Request
    parser: ReplyParser
    verdict: str  # X-Cache


@dataclass(slots=True, frozen=True)
class ChatReply:
    """The end of a reply: its content, calls and reasoning (streamed: as sent already)."""

    text: str | None
    calls: list[ToolCall]
    ending: Ending  # each family names it (server.serving.finish.WIRE)
    stop_sequence: str | None  # the stop string that ended it, if one did
    reasoning: str = ""  # the think block, when the model thought


def reply_of(run: ChatRun, parsed: ParsedReply) -> ChatReply:
    """The end of ``run``'s reply, from what its parser found."""
    calls, request = parsed.calls, run.request
    end = ending(request, bool(calls))
    return ChatReply(parsed.text, calls, end, request.stop_word, parsed.reasoning)


def call_arguments(call: ToolCall) -> dict[str, Any]:
    """A call's arguments as the object Anthropic and Ollama send (the JSON text a model
    wrote may be another JSON value)."""
    try:
        value = json.loads(call.arguments)
    except ValueError:
        value = call.arguments
    return value if isinstance(value, dict) else {"arguments": value}


def usage_counts(request: Request) -> tuple[int, int, int]:
    """(prompt tokens computed, prompt tokens from the prefix cache, output tokens)."""
    cached = request.num_cached_tokens
    return request.num_prompt_tokens - cached, cached, request.num_output_tokens
