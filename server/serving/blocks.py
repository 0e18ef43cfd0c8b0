"""The blocks of a streamed reply: one open at a time, numbered as they start.

Anthropic's content blocks and the Responses API's output items follow one rule: the
reasoning, the text and each tool call are blocks of their own; a piece of another kind
than the open block's closes it and opens one of its kind; a tool call always opens a
new one; the end of the reply closes the last. Only the frames differ, so each family
gives what opening and closing a block emits, and the rule lives here once.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

B = TypeVar("B")  # a family's block (its kind and what it holds)
F = TypeVar("F")  # a family's frame


class Blocks(Generic[B, F]):
    def __init__(
        self,
        kind: Callable[[B], str],
        opened: Callable[[int, B], list[F]],
        closed: Callable[[int, B], list[F]],
    ) -> None:
        self._kind = kind
        self._opened = opened
        self._closed = closed
        self.num_started = 0
        self.open: B | None = None

    @property
    def index(self) -> int:
        """The open block's number (the last one's, once closed)."""
        return self.num_started - 1

    def start(self, block: B) -> list[F]:
        """Close the open block and open ``block``."""
        frames = self.close()
        self.open = block
        self.num_started += 1
        return frames + self._opened(self.index, block)

    def into(self, kind: str, make: Callable[[], B]) -> list[F]:
        """Before a piece of ``kind``: nothing if a block of that kind is open, else what
        closes the open one and opens ``make()``."""
        if self.open is not None and self._kind(self.open) == kind:
            return []
        return self.start(make())

    def close(self) -> list[F]:
        block, self.open = self.open, None
        return [] if block is None else self._closed(self.index, block)
