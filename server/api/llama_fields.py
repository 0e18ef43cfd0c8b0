"""llama.cpp's documented extension fields, accepted on its routes and on the OpenAI ones.

Each field either maps to what this server does (``n_predict``, ``n_probs``,
``ignore_eos``, ``repeat_last_n``, ``samplers``, ``grammar``, ...), or is
accepted only at the value that turns its feature off, with a message saying
the feature is missing otherwise (``mirostat``, ``typical_p``, ``dry_*``,
``xtc_*``, ...), so a client's defaults pass and a real use is not ignored.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from batching.request import MAX_TOP_LOGPROBS, SamplingParams
from server.api.fields import MAX_GRAMMAR_CHARS, ServingFields
from server.schema import spec
from server.serving.structured import schema_to_gbnf

# llama.cpp's default chain; this server's sampler applies the same order, fixed
SAMPLER_ORDER = (
    "penalties",
    "dry",
    "top_n_sigma",
    "top_k",
    "typ_p",
    "top_p",
    "min_p",
    "xtc",
    "temperature",
)
DEFAULT_SAMPLERS = ("penalties", "top_k", "top_p", "min_p", "temperature")  # what runs here
SAMPLER_NAMES = {name: name for name in SAMPLER_ORDER} | {
    "top-k": "top_k",
    "top-p": "top_p",
    "nucleus": "top_p",
    "min-p": "min_p",
    "typ-p": "typ_p",
    "typical": "typ_p",
    "typical_p": "typ_p",
    "typical-p": "typ_p",
    "temp": "temperature",
    "top-n-sigma": "top_n_sigma",
}
SAMPLER_CHARS = dict(zip("edskypmxt", SAMPLER_ORDER, strict=True))  # --sampling-seq letters
# field -> (the value that turns the feature off, what is missing)
NEUTRAL: dict[str, tuple[float | bool, str]] = {
    "typical_p": (1.0, "locally typical sampling"),
    "dynatemp_range": (0.0, "dynamic temperature"),
    "mirostat": (0, "Mirostat sampling"),
    "xtc_probability": (0.0, "XTC sampling"),
    "dry_multiplier": (0.0, "DRY repetition penalty"),
    "min_keep": (0, "a minimum of kept candidates"),
    "n_cache_reuse": (0, "cache reuse by KV shifting (the prefix cache reuses whole prefixes)"),
    "t_max_predict_ms": (0, "a prediction time limit (send timeout, in seconds, for a deadline)"),
    "n_indent": (0, "a minimum line indentation"),
    "post_sampling_probs": (False, "post-sampling probabilities (n_probs gives the model's own)"),
}


@dataclass(slots=True, frozen=True)
class LlamaFields(ServingFields):
    """llama.cpp's extension fields (see its server README)."""

    n_predict: int | None = spec(
        None, doc="llama.cpp's max_tokens; -1: as many as fit (up to max_tokens_limit)", ge=-1
    )
    n_probs: int = spec(
        0,
        doc="the k likeliest tokens and log-probabilities of each output token",
        ge=0,
        le=MAX_TOP_LOGPROBS,
    )
    ignore_eos: bool = spec(False, doc="never end at an end-of-generation token")
    repeat_last_n: int = spec(64, doc="tokens the penalties look at; 0: none, -1: all", ge=-1)
    samplers: list[str] | str | None = spec(
        None,
        doc="samplers to use, by name or llama.cpp's letters; one left out is off; the order "
        "is fixed (penalties, top_k, top_p, min_p, temperature; dry, typ_p, xtc accepted off)",
    )
    grammar: str | None = spec(
        None, doc="GBNF grammar the output must match", min_length=1, max_length=MAX_GRAMMAR_CHARS
    )
    json_schema: dict[str, object] | None = spec(
        None, doc="JSON Schema the output must be an instance of (made into a grammar)"
    )
    timings_per_token: bool = spec(False, doc="timings in every streamed chunk")
    verbose: bool | None = spec(
        None,
        doc="the reply carries __verbose: the prompt as the model read it and the raw output "
        "(null: the server's verbose_replies)",
    )
    id_slot: int = spec(
        -1, doc="accepted: the prefix cache puts a request in the slot holding its prompt", ge=-1
    )
    n_keep: int = spec(0, doc="accepted: the context is never shifted", ge=-1)
    lora: list[object] | None = spec(None, doc="not supported: no LoRA adapters are loaded")
    typical_p: float = spec(1.0, doc="not supported; must be 1")
    dynatemp_range: float = spec(0.0, doc="not supported; must be 0")
    dynatemp_exponent: float = spec(1.0, doc="accepted: dynamic temperature is off")
    mirostat: int = spec(0, doc="not supported; must be 0")
    mirostat_tau: float = spec(5.0, doc="accepted: Mirostat is off")
    mirostat_eta: float = spec(0.1, doc="accepted: Mirostat is off")
    xtc_probability: float = spec(0.0, doc="not supported; must be 0")
    xtc_threshold: float = spec(0.1, doc="accepted: XTC is off")
    dry_multiplier: float = spec(0.0, doc="not supported; must be 0")
    dry_base: float = spec(1.75, doc="accepted: DRY is off")
    dry_allowed_length: int = spec(2, doc="accepted: DRY is off")
    dry_penalty_last_n: int = spec(-1, doc="accepted: DRY is off")
    dry_sequence_breakers: list[str] | None = spec(None, doc="accepted: DRY is off")
    top_n_sigma: float = spec(-1.0, doc="not supported; must be -1 (off)")
    min_keep: int = spec(0, doc="not supported; must be 0")
    n_cache_reuse: int = spec(0, doc="not supported; must be 0")
    t_max_predict_ms: int = spec(0, doc="not supported; must be 0 (see timeout)")
    n_indent: int = spec(0, doc="not supported; must be 0")
    post_sampling_probs: bool = spec(False, doc="not supported; must be false")

    def __post_init__(self) -> None:
        ServingFields.__post_init__(self)
        for name, (neutral, what) in NEUTRAL.items():
            if getattr(self, name) != neutral:
                raise ValueError(
                    f"{name}: {what} is not supported by this server; send "
                    f"{str(neutral).lower()} or remove the field"
                )
        if self.n_predict == 0:
            raise ValueError(
                "n_predict: 0 (evaluate the prompt only) is not supported; send at least 1, "
                "or -1 for as many as fit"
            )
        if self.top_n_sigma > 0:
            raise ValueError("top_n_sigma: top-n-sigma sampling is not supported; send -1")
        if self.lora:
            raise ValueError("lora: this server loads no LoRA adapters; remove the field")
        self.sampler_names()
        self.llama_grammar()

    def sampler_names(self) -> tuple[str, ...] | None:
        """``samplers`` as canonical names; a ValueError for an order this server cannot run."""
        if self.samplers is None:
            return None
        if isinstance(self.samplers, str):
            unknown = sorted(set(self.samplers) - set(SAMPLER_CHARS))
            if unknown:
                raise ValueError(
                    f"samplers: unknown letter(s) {', '.join(unknown)}; known are "
                    f"{''.join(SAMPLER_CHARS)}"
                )
            names = [SAMPLER_CHARS[c] for c in self.samplers]
        else:
            unknown = [s for s in self.samplers if s not in SAMPLER_NAMES]
            if unknown:
                raise ValueError(
                    f"samplers: unknown sampler(s) {', '.join(map(repr, unknown))}; known are "
                    f"{', '.join(SAMPLER_ORDER)}"
                )
            names = [SAMPLER_NAMES[s] for s in self.samplers]
        order = [SAMPLER_ORDER.index(n) for n in names]
        if order != sorted(set(order)):
            raise ValueError(
                f"samplers: this server runs its samplers once each in llama.cpp's default "
                f"order ({', '.join(SAMPLER_ORDER)}), so it cannot honour {names}; send them "
                "in that order"
            )
        return tuple(names)

    def llama_grammar(self) -> str | None:
        """GBNF from ``grammar`` or ``json_schema`` (llama.cpp's names)."""
        if self.grammar is not None and self.json_schema is not None:
            raise ValueError("grammar, json_schema: send one of them, not both")
        if self.json_schema is not None:
            return schema_to_gbnf(self.json_schema, "json_schema")
        return self.grammar

    def llama_params(self, params: SamplingParams) -> SamplingParams:
        """``params`` with llama.cpp's window and sampler selection applied: a sampler left
        out of ``samplers`` is off (the last draw is then at temperature 1)."""
        window = 1 << 30 if self.repeat_last_n == -1 else self.repeat_last_n
        params = dataclasses.replace(params, repeat_last_n=window)
        names = self.sampler_names()
        if names is None:
            return params
        off: dict[str, object] = {}
        if "top_k" not in names:
            off["top_k"] = 0
        if "top_p" not in names:
            off["top_p"] = 1.0
        if "min_p" not in names:
            off["min_p"] = 0.0
        if "temperature" not in names and params.temperature > 0:
            off["temperature"] = 1.0
        return dataclasses.replace(params, **off)  # type: ignore[arg-type]

    def n_predict_tokens(self, unlimited: int) -> int | None:
        """``n_predict`` as a token count (-1: ``unlimited``); None when not sent."""
        if self.n_predict is None:
            return None
        return unlimited if self.n_predict == -1 else self.n_predict
