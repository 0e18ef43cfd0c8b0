"""Prompts to token ids, with control tokens only where the chat template put them.

A chat template turns (role, content) messages into text full of markers
(``<|im_start|>``, ``<start_of_turn>``). Tokenizing that whole text with
special-token parsing on would also turn markers *typed by a user* into real
control tokens, letting a message forge a system turn. So the template is
rendered with a placeholder per message content, the template's own text is
tokenized with special parsing, and each content as plain text.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from speculative.llama import LlamaModel

log = logging.getLogger(__name__)
Messages = Sequence[tuple[str, str]]  # (role, content)


def encode_prompt(model: LlamaModel, prompt: str | Messages) -> list[int]:
    """Raw text as plain text; messages through the model's chat template."""
    if isinstance(prompt, str):
        return model.tokenize(prompt)
    tokens = encode_chat(model, prompt)
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
