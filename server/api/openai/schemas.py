"""The body of OpenAI's /v1/completions (see server.schema); its chat body, which every
chat family's request becomes, is ``server.api.chat_body``."""

from __future__ import annotations

from dataclasses import dataclass

from batching.request import MAX_TOP_LOGPROBS
from server.api.sampling_fields import SamplingFields
from server.prompts import RawPrompt
from server.schema import spec
from server.serving.infill import InfillInput
from server.serving.limits import MAX_ASKED_TOKENS


@dataclass(slots=True, frozen=True)
class CompletionBody(SamplingFields):
    """POST /v1/completions"""

    prompt: str | list[str | int | list[int]] = spec(
        "",
        doc="the text to continue, or its token ids (one prompt per request)",
        required=True,
    )
    max_tokens: int = spec(16, doc="most tokens to generate", ge=1, le=MAX_ASKED_TOKENS)
    suffix: str | None = spec(
        None,
        doc="fill in the middle: the text after the gap, the prompt being the text before "
        "(one text prompt; a model with FIM tokens: qwen2.5-coder-0.5b)",
    )
    echo: bool = spec(False, doc="not supported; must be false")
    best_of: int = spec(1, doc="not supported; must be 1", ge=1, le=1)
    logprobs: int | None = spec(
        None,
        doc="return each output token's log-probability and the k likeliest tokens",
        ge=0,
        le=MAX_TOP_LOGPROBS,
    )

    def __post_init__(self) -> None:
        SamplingFields.__post_init__(self)
        self.prompt_value()  # the prompt's checks
        self.infill()  # and the suffix's

    @property
    def num_top_logprobs(self) -> int | None:
        return self.logprobs if self.logprobs is not None else self.n_probs or None

    def infill(self) -> InfillInput | None:
        """The prompt and suffix as a fill-in-the-middle request, when a suffix is sent."""
        if self.suffix is None:
            return None
        prompt = self.prompt_value()
        if not isinstance(prompt, str):
            raise ValueError("suffix: needs the prompt as one text, not token ids")
        return InfillInput(prefix=prompt, suffix=self.suffix, repo_level=False)

    def prompt_value(self) -> str | RawPrompt:
        """The one prompt: text, or token ids (OpenAI's array forms, as llama-server)."""
        prompt = self.prompt
        if isinstance(prompt, list) and prompt and all(isinstance(p, int) for p in prompt):
            return RawPrompt(tuple(p for p in prompt if isinstance(p, int)))
        prompts = [prompt] if isinstance(prompt, str) else prompt
        if len(prompts) != 1:
            raise ValueError("prompt: send exactly one prompt per request")
        (only,) = prompts
        if not only:
            raise ValueError("prompt: must not be empty")
        return RawPrompt(tuple(only)) if isinstance(only, list) else str(only)
