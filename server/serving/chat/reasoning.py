"""Per request: how its reply is parsed (``reply_parser``) and its thinking budget.

Every API family's chat runs through here, so a thinking model's reply is split
the same way for chat completions, Anthropic, Responses and Ollama.

Whether the reply starts inside a think block (llama-server's
``thinking_forced_open``) is read off the prompt itself: templates such as
DeepSeek R1's end the generation prompt with the open tag, and so does a
prefill that begins thinking.
"""

from __future__ import annotations

from batching.request import Request, ThinkBudget
from server.serving.chat.ask import ChatAsk
from server.serving.chat.prompt import tool_names
from server.serving.chat.reply_events import ThinkTags, think_tags
from server.serving.chat.reply_parser import ReplyParser
from speculative.llama import LlamaModel

NUM_TAIL_TOKENS = 16  # prompt tokens read back to find an open think tag


def model_tags(model: LlamaModel, body: ChatAsk) -> ThinkTags | None:
    """The think tags the model writes: its template's; with reasoning_format deepseek,
    ``<think>`` even where the template does not say so."""
    tags = think_tags(model.template_text)
    if tags is None and body.reasoning_format == "deepseek":
        return think_tags("</think>")
    return tags


def is_thinking_at_start(model: LlamaModel, request: Request, tags: ThinkTags | None) -> bool:
    """Does the prompt end inside a think block (its last tag is an open one)?"""
    if tags is None:
        return False
    tail_tokens = request.prompt_tokens[-NUM_TAIL_TOKENS:]
    tail = b"".join(model.piece(t, special=True) for t in tail_tokens).decode(errors="replace")
    return tail.rstrip().endswith(tags.open)


def reply_setup(
    model: LlamaModel, body: ChatAsk, request: Request
) -> tuple[ThinkTags | None, bool]:
    """The tags to split the reply at (none with reasoning_format none), whether it starts
    thinking, and the request's thinking budget set (before it is submitted: the executor
    reads it; the budget holds whether the reply is split or not)."""
    tags = model_tags(model, body)
    is_open = is_thinking_at_start(model, request, tags)
    budget = body.thinking_budget
    if tags is not None and budget is not None:
        request.think_budget = ThinkBudget(
            max_tokens=budget,
            open=tags.open,
            close_tokens=tuple(model.tokenize(f"\n{tags.close}\n\n", add_special=False)),
            close=tags.close,
            is_open=is_open,
        )
        request.is_speculative = False  # forced tokens and drafts do not mix
    return (None, False) if body.reasoning_format == "none" else (tags, is_open)


def new_parser(body: ChatAsk, tags: ThinkTags | None, is_open: bool) -> ReplyParser:
    """A fresh parser for one choice of ``body``'s reply."""
    max_calls = 1 if body.parallel_tool_calls is False else None
    return ReplyParser(tags, is_thinking=is_open, tool_names=tool_names(body), max_calls=max_calls)
