"""What the chat machinery reads of a chat request, as a protocol.

Every chat family's body becomes ``server.api.chat_body.ChatCompletionBody``,
which has all of these; the chat machinery names only this protocol, so that
nothing in ``server.serving`` imports a body schema of the HTTP layer.
"""

from __future__ import annotations

from typing import Protocol

from server.serving.chat.messages import ChatMessage, NamedToolChoice, Tool


class ChatAsk(Protocol):
    @property
    def messages(self) -> list[ChatMessage]: ...

    @property
    def tools(self) -> list[Tool] | None: ...

    @property
    def tool_choice(self) -> str | NamedToolChoice | None: ...

    @property
    def parallel_tool_calls(self) -> bool | None: ...

    @property
    def reasoning_format(self) -> str | None: ...

    @property
    def thinking_budget(self) -> int | None:
        """Most thinking tokens; None: no limit."""
        ...

    def template_kwargs(self) -> dict[str, object]:
        """The chat template's extra variables."""
        ...
