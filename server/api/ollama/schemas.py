"""Request bodies of Ollama's native API, and their translation to a chat body.

``options`` are Ollama's runner options: the sampling ones are honoured, and
``num_ctx`` bounds prompt and reply together (at most the model's context); those
that shape how a model is loaded (``num_gpu``, ``num_thread``, ...) are accepted
and left to config.json, which decides how each model is loaded;
samplers this server lacks are accepted only at their neutral value. Unset
options take Ollama's documented defaults (temperature 0.8, top_p 0.9, ...).
Ollama's tool calls carry no ids: each ``tool`` turn answers the earliest
call of the assistant turns before it not yet answered.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from server.api.chat_body import EFFORTS, ChatCompletionBody
from server.api.fields import ServingFields
from server.schema import spec
from server.serving.chat.messages import (
    ChatMessage,
    FunctionCall,
    JsonSchemaFormat,
    ResponseFormat,
    Tool,
    ToolCallItem,
)
from server.serving.limits import MAX_ASKED_TOKENS


@dataclass(slots=True, frozen=True)
class Options:
    """Ollama's options: sampling honoured, load-time ones left to config.json."""

    temperature: float = spec(0.8, doc="0 is greedy", ge=0.0, le=2.0)
    top_p: float = spec(0.9, doc="nucleus mass", gt=0.0, le=1.0)
    top_k: int = spec(40, doc="k likeliest tokens; 0 disables", ge=0)
    min_p: float = spec(0.0, doc="min-p filter", ge=0.0, le=1.0)
    repeat_penalty: float = spec(1.1, doc="llama.cpp repeat penalty", ge=0.01, le=10)
    presence_penalty: float = spec(0.0, doc="penalise tokens already present", ge=-2, le=2)
    frequency_penalty: float = spec(0.0, doc="penalise tokens by their count", ge=-2, le=2)
    seed: int | None = spec(
        None, doc="random seed; -1: a random one (Ollama's)", ge=-1, le=2**63 - 1
    )
    stop: list[str] | None = spec(None, doc="up to 8 stop strings")
    num_predict: int | None = spec(
        None, doc="most tokens; -1, -2 or absent: as many as fit", ge=-2, le=MAX_ASKED_TOKENS
    )
    repeat_last_n: int = spec(64, doc="tokens the penalties look at; 0: none, -1: all", ge=-1)
    typical_p: float = spec(1.0, doc="only 1 (off)", ge=1.0, le=1.0)
    tfs_z: float = spec(1.0, doc="only 1 (off)", ge=1.0, le=1.0)
    mirostat: int = spec(0, doc="only 0 (off)", ge=0, le=0)
    mirostat_tau: float | None = spec(None, doc="accepted; mirostat is off")
    mirostat_eta: float | None = spec(None, doc="accepted; mirostat is off")
    penalize_newline: bool | None = spec(None, doc="accepted (Ollama dropped it too)")
    num_keep: int | None = spec(None, doc="accepted; context shifting is not done")
    num_ctx: int | None = spec(
        None,
        doc="the most tokens prompt and reply take together (the chat truncated to it, the "
        "reply ended at it); above the model's context (config.json, /api/ps): the model's",
        ge=1,
    )
    num_batch: int | None = spec(None, doc="accepted; config.json sets batch_tokens")
    num_gpu: int | None = spec(None, doc="accepted; config.json sets gpu_layers")
    main_gpu: int | None = spec(None, doc="accepted; config.json places the model")
    num_thread: int | None = spec(None, doc="accepted; config.json sets threads")
    numa: bool | None = spec(None, doc="accepted and not used")
    low_vram: bool | None = spec(None, doc="accepted and not used")
    f16_kv: bool | None = spec(None, doc="accepted; config.json sets cache_type")
    logits_all: bool | None = spec(None, doc="accepted and not used")
    vocab_only: bool | None = spec(None, doc="accepted and not used")
    use_mmap: bool | None = spec(None, doc="accepted and not used")
    use_mlock: bool | None = spec(None, doc="accepted and not used")
    embedding_only: bool | None = spec(None, doc="accepted and not used")
    draft_num_predict: int | None = spec(
        None, doc="accepted; config.json sets a model's draft and the adaptive gate its length"
    )

    def sampling(self) -> dict[str, object]:
        """The chat body's fields for these options."""
        limit = self.num_predict if self.num_predict is not None and self.num_predict > 0 else None
        return {
            "temperature": self.temperature,
            "top_p": self.top_p,
            "top_k": self.top_k,
            "min_p": self.min_p,
            "repeat_penalty": self.repeat_penalty,
            "presence_penalty": self.presence_penalty,
            "frequency_penalty": self.frequency_penalty,
            "seed": None if self.seed == -1 else self.seed,
            "repeat_last_n": self.repeat_last_n,
            "stop": self.stop,
            "max_tokens": limit,
            "context_limit": self.num_ctx,
        }


@dataclass(slots=True, frozen=True)
class CallFunction:
    name: str = spec(doc="the function called")
    arguments: dict[str, object] = spec(doc="its arguments, an object")
    index: int | None = spec(None, doc="its place among the turn's calls (Ollama returns it)")


@dataclass(slots=True, frozen=True)
class OllamaToolCall:
    """A call an assistant turn made."""

    function: CallFunction = spec(doc="what was called")
    id: str | None = spec(None, doc="the call's id (newer clients send one)")
    type: str | None = spec(None, doc="function", choices=("function",))
    index: int | None = spec(None, doc="its place among the turn's calls")


@dataclass(slots=True, frozen=True)
class OllamaMessage:
    """One chat turn."""

    role: str = spec(doc="who speaks", choices=("system", "user", "assistant", "tool"))
    content: str = spec("", doc="the text")
    images: list[str] | None = spec(None, doc="refused: the served models read text only")
    thinking: str | None = spec(
        None, doc="an assistant turn's thinking (given to the template as reasoning_content)"
    )
    tool_calls: list[OllamaToolCall] | None = spec(None, doc="the calls an assistant made")
    tool_name: str | None = spec(None, doc="on a tool turn: the tool that answered")
    tool_call_id: str | None = spec(None, doc="on a tool turn: the call it answers")

    def __post_init__(self) -> None:
        if self.images:
            raise ValueError("images: the served models read text only; send text")


@dataclass(slots=True, frozen=True)
class GenerationFields(ServingFields):
    """What /api/chat and /api/generate share."""

    model: str = spec("", doc="a configured model name", required=True, min_length=1)
    format: str | dict[str, object] | None = spec(
        None, doc='"json" for any JSON object, or a JSON Schema (grammar-constrained)'
    )
    options: Options | None = spec(None, doc="sampling options (Ollama's names)")
    stream: bool = spec(True, doc="NDJSON lines as tokens come (Ollama's default)")
    think: bool | str | None = spec(
        None,
        doc="false: no thinking; true or unset: a thinking model's thinking comes apart, in "
        "thinking; low, medium or high: the template's reasoning_effort",
    )
    truncate: bool = spec(
        True,
        doc="drop the oldest turns (a user turn and its replies) when the chat does not fit "
        "the context, as Ollama does; false: a 400",
    )
    shift: bool = spec(
        True, doc="accepted; a reply that reaches the context's end stops (done_reason length)"
    )
    logprobs: bool = spec(False, doc="only false (the /v1 routes have logprobs)")
    top_logprobs: int | None = spec(None, doc="refused (the /v1 routes have logprobs)")

    def __post_init__(self) -> None:
        ServingFields.__post_init__(self)
        if isinstance(self.format, str) and self.format not in ("", "json"):
            raise ValueError(f'format: "json" or a JSON Schema object, got {self.format!r}')
        if self.logprobs or self.top_logprobs is not None:
            raise ValueError(
                "logprobs: not served on Ollama's routes; /v1/chat/completions has them"
            )
        if isinstance(self.think, str) and self.think not in EFFORTS:
            raise ValueError(f"think: true, false, low, medium or high, got {self.think!r}")

    def response_format(self) -> ResponseFormat | None:
        if isinstance(self.format, dict):
            schema = JsonSchemaFormat(name="format", schema=self.format)
            return ResponseFormat(type="json_schema", json_schema=schema)
        return ResponseFormat(type="json_object") if self.format == "json" else None

    def chat_body(
        self, messages: list[ChatMessage], tools: list[Tool] | None
    ) -> ChatCompletionBody:
        """The same request as /v1/chat/completions takes it (a ValueError is the client's)."""
        sampling = (self.options or Options()).sampling()
        thinking: dict[str, object] = {}
        if self.think is False:
            thinking["reasoning_budget"] = 0
        elif isinstance(self.think, str):
            thinking["reasoning_effort"] = self.think
        return ChatCompletionBody(
            model=self.model,
            messages=messages,
            tools=tools,
            **thinking,  # type: ignore[arg-type]
            truncate=self.truncate,
            response_format=self.response_format(),
            **self.serving(),  # type: ignore[arg-type]
            **sampling,  # type: ignore[arg-type]
        )


@dataclass(slots=True, frozen=True)
class OllamaChatBody(GenerationFields):
    """POST /api/chat"""

    messages: list[OllamaMessage] | None = spec(None, doc="the conversation; none: load the model")
    tools: list[Tool] | None = spec(None, doc="functions the model may call", max_length=128)

    def chat(self) -> ChatCompletionBody:
        return self.chat_body(chat_messages(self.messages or []), self.tools)


def chat_messages(messages: list[OllamaMessage]) -> list[ChatMessage]:
    """Ollama's turns as OpenAI's: calls get ids, tool turns the id of the call they answer."""
    out = []
    pending: list[str] = []  # ids of calls not yet answered, oldest first
    for i, message in enumerate(messages):
        if message.role == "tool":
            call_id = message.tool_call_id or (pending[0] if pending else None)
            if call_id is None:
                raise ValueError(f"messages[{i}]: a tool turn answers no earlier tool call")
            if call_id in pending:
                pending.remove(call_id)
            out.append(ChatMessage(role="tool", content=message.content, tool_call_id=call_id))
            continue
        calls = [
            ToolCallItem(
                id=call.id or f"call_{i}_{j}",
                function=FunctionCall(call.function.name, json.dumps(call.function.arguments)),
            )
            for j, call in enumerate(message.tool_calls or [])
        ]
        pending += [call.id for call in calls]
        if calls and message.role != "assistant":
            raise ValueError(f"messages[{i}].tool_calls: only an assistant turn calls tools")
        content = message.content if message.content or not calls else None
        thinking = message.thinking if message.role == "assistant" else None
        out.append(
            ChatMessage(
                role=message.role,
                content=content,
                tool_calls=calls or None,
                reasoning_content=thinking or None,  # a thinking template may show it again
            )
        )
    return out


@dataclass(slots=True, frozen=True)
class OllamaGenerateBody(GenerationFields):
    """POST /api/generate"""

    prompt: str = spec("", doc="the text; empty: load the model (keep_alive 0: unload it)")
    system: str | None = spec(None, doc="a system turn before the prompt")
    raw: bool = spec(False, doc="the prompt as it is, without the chat template")
    suffix: str | None = spec(
        None,
        doc="fill in the middle: the text after the gap, the prompt being the text before "
        "(a model with FIM tokens: qwen2.5-coder-0.5b)",
    )
    template: str | None = spec(None, doc="refused: the model's own template is used")
    context: list[int] | None = spec(None, doc="refused: send the conversation to /api/chat")
    images: list[str] | None = spec(None, doc="refused: the served models read text only")
    width: int | None = spec(None, doc="accepted; image generation only")
    height: int | None = spec(None, doc="accepted; image generation only")
    steps: int | None = spec(None, doc="accepted; image generation only")

    def __post_init__(self) -> None:
        GenerationFields.__post_init__(self)
        refused = {
            "template": "a template of the request's own is not supported",
            "context": "context arrays are not supported; send the conversation to /api/chat",
            "images": "the served models read text only",
        }
        for name, why in refused.items():
            if getattr(self, name):
                raise ValueError(f"{name}: {why}; remove the field")

    def chat(self) -> ChatCompletionBody:
        turns = [] if self.system is None else [ChatMessage(role="system", content=self.system)]
        return self.chat_body([*turns, ChatMessage(role="user", content=self.prompt)], None)
