"""Request bodies of the prototype JSON API, declared once (see server.schema)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from batching.request import SamplingParams
from server.duration import parse_keep_alive
from server.schema import spec
from server.serving.structured import schema_to_gbnf

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


@dataclass(slots=True, frozen=True, kw_only=True)
class GenerateBody(ServingFields):
    """Text generation request for /generate and /send_text."""

    prompt: str = spec(
        doc="the text to continue (or, with a chat model, to answer)",
        min_length=1,
        max_length=MAX_PROMPT_CHARS,
    )
    model_name: str | None = spec(None, doc="a configured model name; the default when omitted")
    max_tokens: int = spec(128, doc="most tokens to generate", ge=1, le=32768)
    temperature: float = spec(
        0.8, doc="0 is greedy (deterministic); higher is more random", ge=0.0, le=5.0
    )
    top_p: float = spec(0.95, doc="nucleus sampling mass; 1 disables", gt=0.0, le=1.0)
    top_k: int = spec(40, doc="sample among the k likeliest tokens; 0 disables", ge=0)
    min_p: float = spec(
        0.05, doc="drop tokens below min_p x the top probability; 0 disables", ge=0.0, le=1.0
    )
    repeat_penalty: float = spec(
        1.0, doc="penalise recently seen tokens; 1 disables", ge=0.01, le=10.0
    )
    seed: int | None = spec(None, doc="random seed for reproducible sampling", ge=0, le=2**63 - 1)
    stop: str | list[str] | None = spec(
        None, doc=f"stop before any of these strings (up to {MAX_STOP_STRINGS})"
    )

    stream: bool = spec(False, doc="send tokens as server-sent events while they are decoded")
    grammar: str | None = spec(
        None,
        doc="GBNF grammar (llama.cpp's format, start rule `root`) the output must match",
        min_length=1,
        max_length=MAX_GRAMMAR_CHARS,
    )
    json_schema: dict[str, object] | None = spec(
        None, doc="JSON Schema the output must be a valid instance of (made into a grammar)"
    )

    def __post_init__(self) -> None:
        ServingFields.__post_init__(self)
        stop_strings(self.stop)  # reject a bad stop list at parse time
        self.grammar_text()

    def grammar_text(self) -> str | None:
        """The GBNF constraining the output, from ``grammar`` or ``json_schema``."""
        if self.grammar is not None and self.json_schema is not None:
            raise ValueError("grammar, json_schema: send one of them, not both")
        if self.json_schema is not None:
            return schema_to_gbnf(self.json_schema)
        return self.grammar

    def sampling_params(self) -> SamplingParams:
        return SamplingParams(
            max_tokens=self.max_tokens,
            temperature=self.temperature,
            top_k=self.top_k,
            top_p=self.top_p,
            min_p=self.min_p,
            repeat_penalty=self.repeat_penalty,
            seed=self.seed,
            stop=stop_strings(self.stop),
        )


def stop_strings(stop: str | list[str] | None) -> tuple[str, ...]:
    """Normalise a ``stop`` field; a ValueError says what is wrong with it."""
    strings = [stop] if isinstance(stop, str) else list(stop or [])
    if len(strings) > MAX_STOP_STRINGS:
        raise ValueError(f"stop: at most {MAX_STOP_STRINGS} stop strings, got {len(strings)}")
    if any(not 0 < len(s) <= MAX_STOP_CHARS for s in strings):
        raise ValueError(f"stop: each stop string needs 1 to {MAX_STOP_CHARS} characters")
    return tuple(strings)
