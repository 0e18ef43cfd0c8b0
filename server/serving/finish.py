"""Why a reply ended, in each API family's words: one table.

The engine says STOP (an end-of-generation token or a stop string, which
``Request.stop_word`` names) or LENGTH (the output limit or the context's end);
the reply parser says whether the reply ended with tool calls. A deadline, a
cancellation or a failure is no ending: a family answers those with its error
(``server.serving.failures``).
"""

from __future__ import annotations

from enum import StrEnum

from batching.request import FinishReason, Request


class Ending(StrEnum):
    END = "end"  # the model's end-of-generation token
    STOP_WORD = "stop_word"  # one of the request's stop strings
    LIMIT = "limit"  # the output limit or the end of the context
    TOOL_CALLS = "tool_calls"  # the reply's tool calls: the client runs them, then asks again


class Family(StrEnum):
    OPENAI = "openai"  # chat and legacy completions: ``finish_reason``
    ANTHROPIC = "anthropic"  # ``stop_reason``
    RESPONSES = "responses"  # the response's ``status``
    OLLAMA = "ollama"  # ``done_reason``
    LLAMA_SERVER = "llama_server"  # ``/completion``'s ``stop_type``


WIRE: dict[Family, dict[Ending, str]] = {
    Family.OPENAI: {
        Ending.END: "stop",
        Ending.STOP_WORD: "stop",
        Ending.LIMIT: "length",
        Ending.TOOL_CALLS: "tool_calls",
    },
    Family.ANTHROPIC: {
        Ending.END: "end_turn",
        Ending.STOP_WORD: "stop_sequence",
        Ending.LIMIT: "max_tokens",
        Ending.TOOL_CALLS: "tool_use",
    },
    Family.RESPONSES: {
        Ending.END: "completed",
        Ending.STOP_WORD: "completed",
        Ending.LIMIT: "incomplete",
        Ending.TOOL_CALLS: "completed",
    },
    Family.OLLAMA: {  # Ollama answers a reply of tool calls with "stop" too
        Ending.END: "stop",
        Ending.STOP_WORD: "stop",
        Ending.LIMIT: "length",
        Ending.TOOL_CALLS: "stop",
    },
    Family.LLAMA_SERVER: {  # its /completion parses no tool calls
        Ending.END: "eos",
        Ending.STOP_WORD: "word",
        Ending.LIMIT: "limit",
        Ending.TOOL_CALLS: "eos",
    },
}


def ending(request: Request, has_calls: bool = False) -> Ending:
    """How a finished request ended. A limit wins over calls (their arguments may be cut
    short); calls win over a stop string (the client has tools to run: Anthropic's
    ``tool_use``, OpenAI's ``tool_calls``). A cancelled request never reaches a client
    that is still listening: END, should it be asked."""
    if request.finish_reason is FinishReason.LENGTH:
        return Ending.LIMIT
    if has_calls:
        return Ending.TOOL_CALLS
    return Ending.END if request.stop_word is None else Ending.STOP_WORD


def finish_reason(family: Family, request: Request, has_calls: bool = False) -> str:
    """The family's word for how ``request`` ended."""
    return WIRE[family][ending(request, has_calls)]
