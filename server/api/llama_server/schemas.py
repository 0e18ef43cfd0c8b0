"""The body of llama-server's native ``POST /completion`` (see server.schema).

Defaults are llama-server's (temperature 0.8, top_p 0.95, ...), not OpenAI's;
the extension fields it shares with the OpenAI routes live in ``LlamaFields``.
"""

from __future__ import annotations

from dataclasses import dataclass

from batching.request import SamplingParams
from server.api.fields import MAX_PROMPT_CHARS, stop_strings
from server.api.llama_fields import LlamaFields
from server.prompts import RawPrompt
from server.schema import spec
from server.serving.bias import BAN
from server.serving.limits import MAX_ASKED_TOKENS
from speculative.llama import LlamaModel

MAX_LOGIT_BIAS = 1024
MAX_PROMPTS = 64  # prompts of one /completion request, decoded together


@dataclass(slots=True, frozen=True)
class NativeCompletionBody(LlamaFields):
    """POST /completion (llama-server's own shape; also /completions)"""

    prompt: str | list[object] | dict[str, object] = spec(
        "",
        doc='text, token ids, or text and ids mixed ([12, 34, "text", 56]); one prompt',
        required=True,
    )
    model: str | None = spec(None, doc="a configured model name or alias; the default if none")
    temperature: float = spec(0.8, doc="0 or less is greedy", le=5.0)
    top_k: int = spec(40, doc="k likeliest tokens; 0 disables", ge=0)
    top_p: float = spec(0.95, doc="nucleus mass; 1 disables", ge=0.0, le=1.0)
    min_p: float = spec(0.05, doc="min-p filter; 0 disables", ge=0.0, le=1.0)
    repeat_penalty: float = spec(1.0, doc="llama.cpp's repeat penalty; 1 disables", ge=0, le=10)
    presence_penalty: float = spec(0.0, doc="penalise tokens already present", ge=-2, le=2)
    frequency_penalty: float = spec(0.0, doc="penalise tokens by their count", ge=-2, le=2)
    seed: int = spec(-1, doc="random seed; -1: random", ge=-1, le=2**63 - 1)
    stop: list[str] | str | None = spec(None, doc="stop strings, left out of the content")
    max_tokens: int | None = spec(None, doc="same as n_predict", ge=1, le=MAX_ASKED_TOKENS)
    stream: bool = spec(False, doc="server-sent events: a piece per event, then the result")
    logit_bias: list[list[object]] | dict[str, object] | None = spec(
        None,
        doc='[[token id or text, bias or false], ...] or {"id": bias}; false bans the token',
    )
    n_cmpl: int = spec(1, doc="completions per prompt; 1 here (n on /v1/completions)", ge=1)
    return_tokens: bool = spec(False, doc="the output's token ids in `tokens`")
    response_fields: list[str] | None = spec(
        None, doc='only these fields of the result; "a/b" takes b out of a, named a/b'
    )

    def __post_init__(self) -> None:
        LlamaFields.__post_init__(self)
        stop_strings(self.stop)
        self.raw_prompts()
        if self.n_cmpl != 1:
            raise ValueError(
                "n_cmpl: one completion per request on /completion; send n to "
                "/v1/completions for several choices of one prompt"
            )

    def raw_prompts(self) -> list[RawPrompt]:
        """The prompts, in llama-server's shapes: a list of texts, of id lists or of
        objects is several prompts (one result each); ids mixed with texts are one."""
        prompt = self.prompt
        several = isinstance(prompt, list) and all(isinstance(p, str | list | dict) for p in prompt)
        items = prompt if several and isinstance(prompt, list) else [prompt]
        if not 1 <= len(items) <= MAX_PROMPTS:
            raise ValueError(f"prompt: send 1 to {MAX_PROMPTS} prompts, got {len(items)}")
        prompts = [
            _raw_prompt(item, f"prompt[{i}]" if several else "prompt")
            for i, item in enumerate(items)
        ]
        if sum(len(p) for r in prompts for p in r.parts if isinstance(p, str)) > MAX_PROMPT_CHARS:
            raise ValueError(f"prompt: at most {MAX_PROMPT_CHARS} characters in all")
        return prompts

    def sampling_params(self, max_tokens: int, model: LlamaModel) -> SamplingParams:
        params = SamplingParams(
            max_tokens=max_tokens,
            temperature=max(self.temperature, 0.0),
            top_k=self.top_k,
            top_p=self.top_p,
            min_p=self.min_p,
            repeat_penalty=self.repeat_penalty,
            presence_penalty=self.presence_penalty,
            frequency_penalty=self.frequency_penalty,
            seed=None if self.seed == -1 else self.seed,
            stop=stop_strings(self.stop),
            logit_bias=self.bias(model),
        )
        return self.llama_params(params)

    def bias(self, model: LlamaModel) -> tuple[tuple[int, float], ...]:
        """llama-server's logit_bias: pairs of a token id (or a text, meaning each of its
        tokens) and a bias, false banning it; or OpenAI's {"id": bias} object."""
        raw = self.logit_bias
        pairs = list(raw.items()) if isinstance(raw, dict) else raw or []
        if len(pairs) > MAX_LOGIT_BIAS:
            raise ValueError(f"logit_bias: at most {MAX_LOGIT_BIAS} entries, got {len(pairs)}")
        out: list[tuple[int, float]] = []
        for i, pair in enumerate(pairs):
            if not isinstance(pair, list | tuple) or len(pair) != 2:
                raise ValueError(f"logit_bias[{i}]: expected [token id or text, bias]")
            key, value = pair
            if value is False:
                bias = BAN
            elif isinstance(value, int | float) and not isinstance(value, bool):
                bias = float(value)
            else:
                raise ValueError(f"logit_bias[{i}]: the bias is a number or false")
            if not -100 <= bias <= 100 and value is not False:  # as OpenAI bounds it
                raise ValueError(f"logit_bias[{i}]: a bias within -100..100 (false bans)")
            if isinstance(key, str) and key.isdigit() and isinstance(raw, dict):
                tokens = [int(key)]  # OpenAI's object: keys are ids written as text
            elif isinstance(key, str):
                tokens = model.tokenize(key, add_special=False)
            elif isinstance(key, int) and not isinstance(key, bool):
                tokens = [key]
            else:
                raise ValueError(f"logit_bias[{i}]: the token is an id or a text")
            out += [(token, bias) for token in tokens]
        return tuple(out)


@dataclass(slots=True, frozen=True)
class NativeEmbeddingBody:
    """POST /embedding with ``content`` (llama-server's shape; ``input`` answers OpenAI's)"""

    content: str | list[str] = spec(doc="a text, or a list of texts")
    model: str | None = spec(None, doc="a configured model name or alias")
    embd_normalize: int = spec(2, doc="2 only: unit vectors (Euclidean)", ge=2, le=2)


def _raw_prompt(prompt: object, where: str) -> RawPrompt:
    """One prompt: text, token ids, both mixed, or {"prompt_string": text}."""
    if isinstance(prompt, dict):
        if set(prompt) - {"prompt_string"} or not isinstance(prompt.get("prompt_string"), str):
            raise ValueError(
                f'{where}: only {{"prompt_string": text}} here (these models read no images '
                "or audio: multimodal_data is not supported)"
            )
        prompt = prompt["prompt_string"]
    parts = [prompt] if isinstance(prompt, str) else prompt
    if not isinstance(parts, list) or not parts:
        raise ValueError(f"{where}: send text, token ids, or both mixed in one list")
    for i, part in enumerate(parts):
        if isinstance(part, bool) or not isinstance(part, int | str):
            raise ValueError(f"{where}[{i}]: expected a token id or text")
    if not any(parts):
        raise ValueError(f"{where}: must not be empty")
    return RawPrompt(tuple(parts))
