"""The sampling fields chat and text completions share: OpenAI's, with llama.cpp's
extensions (``top_k``, ``min_p``, ``repeat_penalty``) and its fields (``LlamaFields``),
and the sampling parameters they make."""

from __future__ import annotations

from dataclasses import dataclass

from batching.request import SamplingParams
from server.api.fields import stop_strings
from server.api.llama_fields import LlamaFields
from server.schema import spec
from server.serving.chat.messages import ResponseFormat

MAX_LOGIT_BIAS = 1024


MAX_CHOICES = 128  # the model's max_batch_size bounds it further


@dataclass(slots=True, frozen=True)
class StreamOptions:
    """Options for streamed replies."""

    include_usage: bool = spec(False, doc="send a last chunk with token usage")
    include_obfuscation: bool | None = spec(None, doc="accepted; chunks carry no padding")


@dataclass(slots=True, frozen=True)
class SamplingFields(LlamaFields):
    """Sampling fields shared by chat and text completions."""

    model: str | None = spec(None, doc="a configured model name; the default when omitted")
    temperature: float = spec(1.0, doc="0 is greedy", ge=0.0, le=2.0)
    top_p: float = spec(1.0, doc="nucleus mass", gt=0.0, le=1.0)
    top_k: int = spec(40, doc="extension: k likeliest tokens; 0 disables", ge=0)
    min_p: float = spec(0.05, doc="extension: min-p filter; 0 disables", ge=0.0, le=1.0)
    repeat_penalty: float = spec(1.0, doc="extension: llama.cpp repeat penalty", ge=0.01, le=10)
    presence_penalty: float = spec(0.0, doc="penalise tokens already present", ge=-2, le=2)
    frequency_penalty: float = spec(0.0, doc="penalise tokens by their count", ge=-2, le=2)
    seed: int | None = spec(None, doc="random seed", ge=0, le=2**63 - 1)
    stop: str | list[str] | None = spec(None, doc="up to 8 stop strings")
    n: int = spec(
        1,
        doc="number of choices, up to the model's max_batch_size; the prompt is computed once",
        ge=1,
        le=MAX_CHOICES,
    )
    stream: bool = spec(False, doc="send server-sent events")
    stream_options: StreamOptions | None = spec(None, doc="streaming options")
    user: str | None = spec(None, doc="end-user id (recorded nowhere)")
    response_format: ResponseFormat | None = spec(
        None, doc="text, json_object or json_schema (grammar-constrained; no speculation)"
    )
    logit_bias: dict[str, float] | None = spec(
        None, doc="token id (as a string) -> bias added to its logit, -100..100"
    )

    def __post_init__(self) -> None:
        LlamaFields.__post_init__(self)
        stop_strings(self.stop)
        self.grammar_text()
        self.bias()

    def grammar_text(self) -> str | None:
        llama = self.llama_grammar()
        if self.response_format is None or self.response_format.type == "text":
            return llama
        if llama is not None:
            raise ValueError("response_format, grammar/json_schema: send one of them")
        return self.response_format.grammar_text()

    def bias(self) -> tuple[tuple[int, float], ...]:
        """``logit_bias`` as (token id, bias) pairs; the route checks ids against the vocab."""
        pairs = []
        items = (self.logit_bias or {}).items()
        if len(items) > MAX_LOGIT_BIAS:
            raise ValueError(f"logit_bias: at most {MAX_LOGIT_BIAS} tokens, got {len(items)}")
        for key, value in items:
            if not key.isdigit():
                raise ValueError(f'logit_bias: keys are token ids like "42", got {key!r}')
            if not -100 <= value <= 100:
                raise ValueError(f"logit_bias.{key}: must be within -100..100, got {value}")
            pairs.append((int(key), float(value)))
        return tuple(pairs)

    def sampling_params(self, max_tokens: int) -> SamplingParams:
        return self.llama_params(self._sampling_params(max_tokens))

    def _sampling_params(self, max_tokens: int) -> SamplingParams:
        return SamplingParams(
            max_tokens=max_tokens,
            temperature=self.temperature,
            top_p=self.top_p,
            top_k=self.top_k,
            min_p=self.min_p,
            repeat_penalty=self.repeat_penalty,
            presence_penalty=self.presence_penalty,
            frequency_penalty=self.frequency_penalty,
            seed=self.seed,
            stop=stop_strings(self.stop),
            logit_bias=self.bias(),
        )

    @property
    def include_usage(self) -> bool:
        return self.stream_options is not None and self.stream_options.include_usage
