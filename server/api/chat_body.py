"""The chat body every chat family's request becomes: OpenAI's chat completion body with
llama.cpp's extension fields (see server.schema).

Fields OpenAI defines that this server cannot honour are refused by name
(``UNSUPPORTED``) rather than silently ignored. The sampling fields it shares with text
completions (``top_k``, ``min_p`` and ``repeat_penalty`` among them, accepted as
extensions as llama-server does) are ``server.api.sampling_fields``.
"""

from __future__ import annotations

from dataclasses import dataclass

from batching.request import MAX_TOP_LOGPROBS
from server.api.sampling_fields import SamplingFields
from server.schema import spec
from server.serving.chat.messages import ChatMessage, NamedToolChoice, Tool
from server.serving.limits import MAX_ASKED_TOKENS, max_output_tokens

REASONING_FORMATS = ("auto", "deepseek", "none")


EFFORTS = ("none", "minimal", "low", "medium", "high", "xhigh", "max")  # reasoning_effort


# template variables the renderer passes itself (llama-cpp-python's Jinja2ChatFormatter)
RESERVED_TEMPLATE_NAMES = frozenset(
    (
        "messages",
        "tools",
        "tool_choice",
        "functions",
        "function_call",
        "bos_token",
        "eos_token",
        "add_generation_prompt",
        "raise_exception",
        "strftime_now",
    )
)


UNSUPPORTED = {
    "functions": "function calling",
    "function_call": "function calling",
    "suffix": "suffix (insertion)",
    "audio": "audio output",
    "modalities": "modalities other than text",
    "prediction": "predicted outputs",
    "web_search_options": "web search",
    "moderation": "moderation",
}


def unsupported_message(data: object) -> str | None:
    """A message naming the first field this server refuses, if any is set."""
    if not isinstance(data, dict):
        return None
    for name, what in UNSUPPORTED.items():
        value = data.get(name)
        if value not in (None, False):
            return f"{name}: {what} is not supported by this server; remove the field"
    if data.get("best_of", 1) != 1:
        return "best_of: not supported; send n for several choices"
    if data.get("echo"):
        return "echo: echoing the prompt is not supported; remove the field"
    return None


@dataclass(slots=True, frozen=True)
class ChatCompletionBody(SamplingFields):
    """POST /v1/chat/completions"""

    messages: list[ChatMessage] = spec(
        doc="the conversation so far", min_length=1, default_factory=list, required=True
    )
    max_tokens: int | None = spec(None, doc="most tokens to generate", ge=1, le=MAX_ASKED_TOKENS)
    max_completion_tokens: int | None = spec(
        None, doc="same as max_tokens", ge=1, le=MAX_ASKED_TOKENS
    )
    logprobs: bool = spec(False, doc="return each output token's log-probability")
    top_logprobs: int | None = spec(
        None,
        doc="with logprobs: the k likeliest tokens at each position",
        ge=0,
        le=MAX_TOP_LOGPROBS,
    )

    tools: list[Tool] | None = spec(None, doc="functions the model may call", max_length=128)
    tool_choice: str | NamedToolChoice | None = spec(
        None,
        doc="none, auto (the default with tools), required (grammar-constrained), "
        'or {"type": "function", "function": {"name": ...}}',
        choices=("none", "auto", "required"),
    )
    parallel_tool_calls: bool | None = spec(
        None, doc="auto: the model may call several; required/named: exactly one call"
    )

    continue_final_message: bool = spec(
        False,
        doc="vLLM's: continue the last assistant turn (what a last assistant turn does here "
        "anyway); needs add_generation_prompt false",
    )
    add_generation_prompt: bool = spec(
        True,
        doc="vLLM's: false only with continue_final_message (the prompt ends with the "
        "assistant's cue, or its turn begun)",
    )
    truncate: bool = spec(
        False,
        doc="drop the oldest turns (a user turn and its replies) until the prompt leaves "
        "room for max_tokens; system turns and the newest turn stay",
    )
    chat_template_kwargs: dict[str, object] | None = spec(
        None, doc='extra variables for the chat template, e.g. {"enable_thinking": false}'
    )
    reasoning_format: str | None = spec(
        None,
        doc="auto (the default) and deepseek: a think block goes to reasoning_content; "
        "none: it stays in content",
        choices=REASONING_FORMATS,
    )
    reasoning_effort: str | None = spec(
        None,
        doc="given to the template as reasoning_effort; none: no thinking (enable_thinking false)",
        choices=EFFORTS,
    )
    reasoning_budget: int | None = spec(
        None,
        doc="most thinking tokens: then the think block is closed and the answer follows; "
        "0: no thinking, -1: no limit",
        ge=-1,
    )
    context_limit: int | None = spec(
        None,
        doc="extension: the most tokens prompt and reply take together (Ollama's num_ctx); "
        "above the model's context: the model's",
        ge=1,
    )
    # OpenAI's fields that cannot change the reply here (the policy: server.api.http)
    metadata: dict[str, str] | None = spec(None, doc="accepted; recorded nowhere")
    store: bool | None = spec(None, doc="accepted; nothing is stored")
    service_tier: str | None = spec(None, doc="accepted; there is one tier")
    safety_identifier: str | None = spec(None, doc="accepted; recorded nowhere")
    prompt_cache_key: str | None = spec(None, doc="accepted; the prefix cache is automatic")
    prompt_cache_retention: str | None = spec(None, doc="accepted; the prefix cache is automatic")
    prompt_cache_options: object = spec(None, doc="accepted; the prefix cache is automatic")
    verbosity: str | None = spec(None, doc="accepted; the model is not told")
    moderation: object = spec(None, doc="refused: nothing is moderated")
    web_search_options: object = spec(None, doc="refused: no web search")

    def __post_init__(self) -> None:
        SamplingFields.__post_init__(self)
        if not self.messages:  # a translated body (an empty Responses input) is not parsed
            raise ValueError("messages: the conversation is empty; send at least one turn")
        for name in (self.chat_template_kwargs or {}).keys() & RESERVED_TEMPLATE_NAMES:
            raise ValueError(
                f"chat_template_kwargs.{name}: the server sets this template variable itself"
            )
        if self.continue_final_message and self.add_generation_prompt:
            raise ValueError(
                "continue_final_message: cannot be combined with add_generation_prompt true "
                "(its default): send add_generation_prompt false"
            )
        if self.continue_final_message and self.messages[-1].role != "assistant":
            raise ValueError(
                "continue_final_message: the last message must be the assistant's turn to continue"
            )
        if not self.add_generation_prompt and not self.continue_final_message:
            raise ValueError(
                "add_generation_prompt: false is taken with continue_final_message only (the "
                "prompt here always ends with the assistant's cue or its turn begun)"
            )
        if self.top_logprobs is not None and not self.logprobs:
            raise ValueError("top_logprobs: needs logprobs: true")
        is_constrained = self.grammar_text() is not None
        if self.thinking_budget is not None and (is_constrained or self.tool_choice_forced):
            raise ValueError(
                "reasoning_budget: cannot be combined with a grammar, response_format or a "
                "required tool call (the budget's close tag is outside the grammar); send one"
            )
        if self.tool_choice not in (None, "none", "auto") and not self.tools:
            raise ValueError("tool_choice: needs tools")
        if isinstance(self.tool_choice, NamedToolChoice):
            names = [tool.function.name for tool in self.tools or []]
            if self.tool_choice.function.name not in names:
                raise ValueError(
                    f"tool_choice.function.name: {self.tool_choice.function.name!r} is not "
                    f"one of the tools ({', '.join(names)})"
                )
        format_type = self.response_format.type if self.response_format else "text"
        if self.tools and self.tool_choice != "none" and format_type != "text":
            raise ValueError("response_format: cannot be combined with tools; send one")

    def output_limit(self, server_limit: int) -> int:
        """The most tokens the reply may have (``server.serving.limits``); every chat
        family's body becomes this one, so they share the rule."""
        asked = (self.max_completion_tokens, self.max_tokens, self.n_predict_tokens(server_limit))
        return max_output_tokens(server_limit, *asked)

    @property
    def tool_choice_forced(self) -> bool:
        """tool_choice required or a named function: the reply is one call, by grammar."""
        return bool(self.tools) and self.tool_choice not in (None, "none", "auto")

    def template_kwargs(self) -> dict[str, object]:
        """The chat template's extra variables: the client's, and what reasoning_effort and
        a zero reasoning_budget mean to thinking templates."""
        kwargs: dict[str, object] = {}
        if self.reasoning_effort is not None:
            kwargs["reasoning_effort"] = self.reasoning_effort
        if self.reasoning_effort == "none" or self.reasoning_budget == 0:
            kwargs["enable_thinking"] = False
        return kwargs | (self.chat_template_kwargs or {})

    @property
    def thinking_budget(self) -> int | None:
        """Most thinking tokens; None: no limit."""
        budget = self.reasoning_budget
        return None if budget is None or budget < 0 else budget

    @property
    def num_top_logprobs(self) -> int | None:
        if self.logprobs:
            return self.top_logprobs or 0
        return self.n_probs or None  # llama.cpp's name for top_logprobs
