"""From a validated body to a submitted ``Request``, and from a done one to JSON."""

from __future__ import annotations

import asyncio
from typing import Any

import anyio.to_thread

from batching.batcher import QueueFullError
from batching.request import Request, RequestStatus
from server.errors import ApiError
from server.registry import LoadedModel, ModelRegistry
from server.schemas import GenerateBody

INLINE_TOKENIZE_CHARS = 8192  # longer prompts are tokenized off the event loop


async def prepare(registry: ModelRegistry, body: GenerateBody) -> tuple[LoadedModel, Request]:
    """Load the model if needed, build the prompt, check it fits; nothing is queued yet."""
    loaded = await registry.get(body.model_name)
    try:
        params = body.sampling_params()
    except ValueError as exc:
        raise ApiError(400, str(exc)) from None
    tokens = await tokenize_prompt(loaded, body.prompt)
    limit = loaded.ctx_per_seq
    if len(tokens) >= limit:
        raise ApiError(
            400,
            f"the prompt is {len(tokens)} tokens but model {loaded.name!r} holds at most "
            f"{limit} tokens per request, prompt and output together; shorten the prompt",
        )
    return loaded, Request(model=loaded.name, prompt_tokens=tokens, params=params)


async def tokenize_prompt(loaded: LoadedModel, prompt: str) -> list[int]:
    model = loaded.model
    templated = (
        model.apply_chat_template([("user", prompt)]) if loaded.settings.use_chat_template else None
    )
    text, parse_special = (templated, True) if templated is not None else (prompt, False)
    if len(text) <= INLINE_TOKENIZE_CHARS:
        return model.tokenize(text, parse_special=parse_special)
    return await anyio.to_thread.run_sync(lambda: model.tokenize(text, parse_special=parse_special))


def submit(loaded: LoadedModel, request: Request) -> None:
    try:
        loaded.batcher.submit(request)
    except QueueFullError as exc:
        raise ApiError(
            503, f"model {loaded.name!r} is busy: {exc}; retry shortly", {"Retry-After": "1"}
        ) from None


async def generate(registry: ModelRegistry, body: GenerateBody) -> Request:
    loaded, request = await prepare(registry, body)
    submit(loaded, request)
    return await wait_done(request)


async def wait_done(request: Request) -> Request:
    """Await a request; if the awaiting handler is cancelled, cancel the sequence too."""
    try:
        return await asyncio.shield(request.done)
    except asyncio.CancelledError:
        request.cancel()
        raise


def result_body(request: Request) -> dict[str, Any]:
    """The JSON reply for a finished request (shared by /generate and tasks)."""
    if request.status is RequestStatus.FAILED:
        raise ApiError(500, f"generation failed: {request.error}")
    return {
        "id": request.id,
        "model": request.model,
        "text": request.text,
        "finish_reason": str(request.finish_reason),
        "usage": {
            "prompt_tokens": request.num_prompt_tokens,
            "completion_tokens": request.num_output_tokens,
            "total_tokens": request.num_prompt_tokens + request.num_output_tokens,
        },
        "timings": request.timings(),
    }
