"""Work that no client waits on (a batch's requests, background responses) runs at a low
priority: the runner sets it here and every request it prepares takes it, whatever the
body's own ``priority`` says, so interactive requests are admitted first."""

from __future__ import annotations

from contextvars import ContextVar

BACKGROUND_PRIORITY: ContextVar[int | None] = ContextVar("background_priority", default=None)


def priority_of(asked: int) -> int:
    """The priority a request is queued with: the body's, or the background one."""
    background = BACKGROUND_PRIORITY.get()
    return asked if background is None else min(asked, background)
