"""Prompts to token ids, with control tokens only where the chat template put them.

A chat template turns (role, content) messages into text full of markers
(``<|im_start|>``, ``<start_of_turn>``). Tokenizing that whole text with
special-token parsing on would also turn markers *typed by a user* into real
control tokens, letting a message forge a system turn. So the template is
rendered with a placeholder per message content, the template's own text is
tokenized with special parsing, and each content as plain text.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from llama_cpp.llama_chat_format import Jinja2ChatFormatter

from speculative.llama import LlamaModel

log = logging.getLogger(__name__)
Messages = Sequence[tuple[str, str]]  # (role, content)


@dataclass(slots=True, frozen=True)
class JinjaChat:
    """A chat the built-in renderer cannot express: OpenAI-shaped messages (assistant
    ``tool_calls``, ``tool`` turns) and ``tools``, for the GGUF's own Jinja template.
    ``fallback`` is the same chat as plain (role, content) turns, for a model whose
    template cannot render it. ``kwargs`` are extra template variables
    (``chat_template_kwargs``, e.g. ``enable_thinking``)."""

    messages: list[dict[str, Any]]
    tools: list[dict[str, Any]] | None
    fallback: Messages
    kwargs: dict[str, Any] = field(default_factory=dict)

    @property
    def has_tools(self) -> bool:
        return self.tools is not None or any(
            m.get("role") == "tool" or m.get("tool_calls") for m in self.messages
        )

    @property
    def num_chars(self) -> int:
        return sum(len(content) for _, content in self.fallback)


def encode_prompt(model: LlamaModel, prompt: str | Messages | JinjaChat) -> list[int]:
    """Raw text as plain text; messages through the model's chat template."""
    if isinstance(prompt, str):
        return model.tokenize(prompt)
    if isinstance(prompt, JinjaChat):
        tokens = encode_jinja_chat(model, prompt)
        if tokens is not None:
            return tokens
        prompt = prompt.fallback
    tokens = encode_chat(model, prompt)
    if tokens is None and model.chat_template is not None:
        # a template llama.cpp's own renderer does not recognise: Jinja renders it
        messages = [{"role": role, "content": content} for role, content in prompt]
        tokens = encode_jinja_chat(model, JinjaChat(messages, None, prompt))
    if tokens is not None:
        return tokens
    # No usable template in the GGUF: a plain transcript the model can continue.
    lines = [f"{role}: {content}" for role, content in prompt]
    return model.tokenize("\n".join([*lines, "assistant:"]))


def encode_chat(model: LlamaModel, messages: Messages) -> list[int] | None:
    """Template markup as control tokens, message contents as text; None without a template."""
    marks = [f"\ue000{i}\ue001" for i in range(len(messages))]  # private-use code points
    templated = model.apply_chat_template(
        [(role, mark) for (role, _), mark in zip(messages, marks, strict=True)]
    )
    if templated is None:
        return None
    parts = split_at(templated, marks)
    if parts is None:  # the template rewrote the placeholders: cannot tell markup from content
        log.warning("chat template of %s does not keep message text intact", model.path.name)
        return None
    tokens = model.tokenize(parts[0], parse_special=True)  # BOS, if any, goes first
    for (_, content), part in zip(messages, parts[1:], strict=True):
        tokens += model.tokenize(content, add_special=False)
        tokens += model.tokenize(part, parse_special=True, add_special=False)
    return tokens


def split_at(text: str, marks: list[str]) -> list[str] | None:
    """``text`` cut at each mark in order (len(marks) + 1 parts); None if one is missing."""
    parts = []
    for mark in marks:
        before, found, text = text.partition(mark)
        if not found:
            return None
        parts.append(before)
    parts.append(text)
    return parts


def can_render_tools(model: LlamaModel) -> bool:
    """Does the GGUF's template know about tools (else the caller describes them itself)?"""
    template = model.chat_template
    return template is not None and b"tools" in template and b"tool_call" in template


def encode_jinja_chat(model: LlamaModel, chat: JinjaChat) -> list[int] | None:
    """The chat through the GGUF's Jinja template (in jinja2's sandbox, as llama-cpp-python
    renders it), contents kept as plain text; None if the template cannot render it."""
    if model.chat_template is None or (chat.has_tools and not can_render_tools(model)):
        return None
    marks: list[str] = []
    messages = []
    for message in chat.messages:
        content = message.get("content")
        if isinstance(content, str) and content:
            marks.append(f"\ue000{len(marks)}\ue001")
            message = {**message, "content": marks[-1]}
        messages.append(message)
    contents = [m["content"] for m in chat.messages if isinstance(m.get("content"), str)]
    contents = [c for c in contents if c]
    bos = model.piece(model.special_tokens()[0], special=True).decode(errors="replace")
    eos = model.piece(model.special_tokens()[1], special=True).decode(errors="replace")
    try:
        formatter = _formatter(model.chat_template.decode(errors="replace"), bos, eos)
        templated: str = formatter(messages=messages, tools=chat.tools, **chat.kwargs).prompt
    except Exception as exc:  # a template error or raise_exception(): not this request's fault
        log.warning("chat template of %s failed (%s); using the fallback", model.path.name, exc)
        return None
    parts = split_at(templated, marks)
    if parts is None:
        log.warning("chat template of %s does not keep message text intact", model.path.name)
        return None
    # a template that writes bos_token itself gets no second one from the tokenizer
    has_bos = bool(bos) and parts[0].startswith(bos)
    tokens = model.tokenize(parts[0], parse_special=True, add_special=not has_bos)
    for content, part in zip(contents, parts[1:], strict=True):
        tokens += model.tokenize(content, add_special=False)
        tokens += model.tokenize(part, parse_special=True, add_special=False)
    return tokens


@functools.lru_cache(maxsize=16)
def _formatter(template: str, bos: str, eos: str) -> Any:
    return Jinja2ChatFormatter(template, eos_token=eos, bos_token=bos)
