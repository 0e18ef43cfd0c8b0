"""What a request's prompt can be, made into token ids, and a chat trimmed to fit.

Besides raw text and chats (``speculative.prompt``): llama-server's native
prompt (text and token ids mixed), a chat whose last turn is the assistant's
reply begun (prefill), and a chat that may lose its oldest turns to fit the
context (``truncate: true``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from server.errors import ApiError
from speculative.llama import LlamaModel
from speculative.prompt import JinjaChat, Messages, encode_prompt


@dataclass(slots=True, frozen=True)
class RawPrompt:
    """llama-server's ``/completion`` prompt: text and token ids in any mix. Text is
    tokenized with control-token markup parsed, as llama-server does: the client wrote all
    of it, its own chat template included. Text that comes first gets the model's BOS."""

    parts: tuple[str | int, ...]


@dataclass(slots=True, frozen=True)
class Prefill:
    """A chat whose last turn is the assistant's reply begun: the chat up to the template's
    assistant cue, then that text, which the model continues (llama-server, Anthropic)."""

    chat: Messages | JinjaChat
    text: str


@dataclass(slots=True, frozen=True)
class Trimmable:
    """A chat that may lose its oldest turns to fit: ``build(k)`` is the chat without its
    ``k`` oldest turns, for ``k`` up to ``max_drop``."""

    build: Callable[[int], Messages | JinjaChat | Prefill]
    max_drop: int


Prompt = str | Messages | JinjaChat | RawPrompt | Prefill | Trimmable


def encode(model: LlamaModel, prompt: Prompt, budget: int) -> list[int]:
    """Token ids of ``prompt``; a ``Trimmable`` chat loses the fewest oldest turns that
    bring it under ``budget`` tokens (all it may lose when none does)."""
    if isinstance(prompt, Trimmable):
        return _fit(model, prompt, budget)
    if isinstance(prompt, RawPrompt):
        return _encode_raw(model, prompt)
    if isinstance(prompt, Prefill):
        return encode_prompt(model, prompt.chat) + model.tokenize(prompt.text, add_special=False)
    return encode_prompt(model, prompt)


def num_chars(prompt: Prompt) -> int | None:
    """The prompt's size in characters, to judge the cost of tokenizing it; None: unknown
    (several tokenizations)."""
    if isinstance(prompt, Trimmable):
        return None
    if isinstance(prompt, str):
        return len(prompt)
    if isinstance(prompt, RawPrompt):
        return sum(len(p) for p in prompt.parts if isinstance(p, str))
    if isinstance(prompt, Prefill):
        size = num_chars(prompt.chat)
        return None if size is None else size + len(prompt.text)
    if isinstance(prompt, JinjaChat):
        return prompt.num_chars
    return sum(len(content) for _, content in prompt)


def _encode_raw(model: LlamaModel, prompt: RawPrompt) -> list[int]:
    parts = list(prompt.parts)
    check_ids(parts, model, "prompt")
    return encode_mixed(model, parts, add_special=True, parse_special=True)


def encode_mixed(
    model: LlamaModel, parts: list[str | int], add_special: bool, parse_special: bool
) -> list[int]:
    """Strings tokenized, ids kept; only a leading string gets BOS (as llama-server)."""
    tokens: list[int] = []
    for i, part in enumerate(parts):
        if isinstance(part, int):
            tokens.append(part)
        else:
            special = add_special and i == 0
            tokens += model.tokenize(part, parse_special=parse_special, add_special=special)
    return tokens


def check_ids(tokens: Sequence[str | int], model: LlamaModel, field: str) -> None:
    """Each id (strings are skipped) must be in the vocabulary."""
    for i, token in enumerate(tokens):
        if isinstance(token, int) and not 0 <= token < model.num_vocab:
            raise ApiError(
                400,
                f"{field}[{i}]: token id {token} is outside the vocabulary of "
                f"{model.path.name} (0..{model.num_vocab - 1})",
            )


def _fit(model: LlamaModel, chat: Trimmable, budget: int) -> list[int]:
    # Fewer turns never make a longer prompt, so the fewest turns to drop is found by
    # bisection: about log2(max_drop) renderings instead of one per turn.
    tokens = encode(model, chat.build(0), budget)
    if len(tokens) < budget or chat.max_drop == 0:
        return tokens
    low, high = 1, chat.max_drop
    best = encode(model, chat.build(high), budget)
    if len(best) >= budget:
        return best  # even the newest turn alone is too long: the caller says so
    while low < high:
        mid = (low + high) // 2
        candidate = encode(model, chat.build(mid), budget)
        if len(candidate) < budget:
            high, best = mid, candidate
        else:
            low = mid + 1
    return best
