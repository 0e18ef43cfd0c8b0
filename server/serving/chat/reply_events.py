"""What a reply's text is made of once parsed: reasoning, content and tool calls
(``reply_parser`` makes these events), a thinking model's tags, and a reply's events
gathered.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from server.serving.chat.tool_calls import ToolCall


@dataclass(slots=True, frozen=True)
class ThinkTags:
    open: str
    close: str


# (open, close) of the thinking models' templates llama.cpp's chat parser knows
KNOWN_TAGS = (
    ThinkTags("<think>", "</think>"),  # DeepSeek R1, Qwen 3, QwQ, Phi-4 reasoning, ...
    ThinkTags("<|START_THINKING|>", "<|END_THINKING|>"),  # Command R7B
    ThinkTags("[THINK]", "[/THINK]"),  # Magistral
    ThinkTags("<seed:think>", "</seed:think>"),  # Seed-OSS
)


def think_tags(template: str | None) -> ThinkTags | None:
    """The think tags a chat template writes, if it is a thinking model's."""
    if not template:
        return None
    return next((tags for tags in KNOWN_TAGS if tags.close in template), None)


@dataclass(slots=True, frozen=True)
class Reasoning:
    text: str


@dataclass(slots=True, frozen=True)
class Content:
    text: str


@dataclass(slots=True, frozen=True)
class CallStart:
    index: int
    name: str


@dataclass(slots=True, frozen=True)
class CallArgs:
    index: int
    delta: str  # a piece of the arguments' JSON text


Event = Reasoning | Content | CallStart | CallArgs


@dataclass(slots=True)
class ParsedReply:
    """A reply's events gathered: the reasoning, the content, the calls."""

    reasoning: str = ""
    content: str = ""
    names: list[str] = field(default_factory=list)
    arguments: list[str] = field(default_factory=list)

    def add(self, events: list[Event]) -> None:
        for event in events:
            if isinstance(event, Reasoning):
                self.reasoning += event.text
            elif isinstance(event, Content):
                self.content += event.text
            elif isinstance(event, CallStart):
                self.names.append(event.name)
                self.arguments.append("")
            else:
                self.arguments[event.index] += event.delta

    @property
    def calls(self) -> list[ToolCall]:
        return [ToolCall(n, a) for n, a in zip(self.names, self.arguments, strict=True)]

    @property
    def text(self) -> str | None:
        """The content as OpenAI's message has it: trimmed beside calls, None if empty."""
        if not self.names:
            return self.content
        return self.content.strip() or None
