"""Body fields every API family shares: keep-alive, serving options, stop strings, limits."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from server.duration import parse_keep_alive
from server.schema import spec

MAX_PROMPT_CHARS = 1_000_000


MAX_STOP_STRINGS = 8


MAX_STOP_CHARS = 256


MAX_GRAMMAR_CHARS = 100_000


@dataclass(slots=True, frozen=True)
class KeepAliveFields:
    """How long the model stays loaded (also the body of POST /models/{name}/load)."""

    keep_alive: float | str | None = spec(
        None,
        doc='how long the model stays loaded once idle: seconds or "5m"; 0 unloads it right '
        "after the request, -1 keeps it loaded (pinned); null: as configured",
    )

    def __post_init__(self) -> None:
        if self.keep_alive is not None:
            parse_keep_alive(self.keep_alive)  # refuse a bad duration at parse time


@dataclass(slots=True, frozen=True)
class ServingFields(KeepAliveFields):
    """How the server runs a request, beyond sampling (extensions on the OpenAI routes)."""

    timeout: float | None = spec(
        None,
        doc="seconds until the request stops with what it has (server default if null)",
        gt=0,
        le=86_400,
    )
    speculative: bool = spec(
        True, doc="let the model's draft (if configured) speed this request up; false to compare"
    )
    cache_prompt: bool = spec(
        True,
        doc="start from the cached KV of an earlier prompt with the same beginning "
        "(llama-server's name); false computes the whole prompt",
    )
    cache: bool = spec(
        True,
        doc="a greedy or seeded request may be answered from the exact-match result cache; "
        "false (or Cache-Control: no-store) always decodes",
    )
    priority: int = spec(
        0,
        doc="higher is admitted first when requests wait; equal priorities are first come, "
        "first served; waiting raises priority by 1 every 10 s",
        ge=-100,
        le=100,
    )
    return_progress: bool = spec(
        False,
        doc="streams: events with prompt_progress (total, cache, processed, time_ms) while "
        "the prompt is read, as llama-server sends them",
    )

    def serving(self) -> dict[str, object]:
        """These fields by name: a body of another API passes them on to a chat body."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(ServingFields)}


def stop_strings(stop: str | list[str] | None) -> tuple[str, ...]:
    """Normalise a ``stop`` field; a ValueError says what is wrong with it."""
    strings = [stop] if isinstance(stop, str) else list(stop or [])
    if len(strings) > MAX_STOP_STRINGS:
        raise ValueError(f"stop: at most {MAX_STOP_STRINGS} stop strings, got {len(strings)}")
    if any(not 0 < len(s) <= MAX_STOP_CHARS for s in strings):
        raise ValueError(f"stop: each stop string needs 1 to {MAX_STOP_CHARS} characters")
    return tuple(strings)
