"""Request bodies of the prototype JSON API, declared once (see server.schema)."""

from __future__ import annotations

from dataclasses import dataclass

from batching.request import SamplingParams
from server.api.fields import (
    MAX_GRAMMAR_CHARS,
    MAX_PROMPT_CHARS,
    MAX_STOP_STRINGS,
    ServingFields,
    stop_strings,
)
from server.schema import spec
from server.serving.limits import MAX_ASKED_TOKENS
from server.serving.structured import schema_to_gbnf


@dataclass(slots=True, frozen=True, kw_only=True)
class GenerateBody(ServingFields):
    """Text generation request for /generate and /send_text."""

    prompt: str = spec(
        doc="the text to continue (or, with a chat model, to answer)",
        min_length=1,
        max_length=MAX_PROMPT_CHARS,
    )
    model_name: str | None = spec(None, doc="a configured model name; the default when omitted")
    max_tokens: int = spec(128, doc="most tokens to generate", ge=1, le=MAX_ASKED_TOKENS)
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
