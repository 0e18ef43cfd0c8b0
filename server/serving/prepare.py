"""One model lease: from a validated body's prompt and parameters to a checked
``Request`` (rendered, tokenized, within the context and the server's limits), and
the other choices of the same prompt. Nothing is queued here (run.py submits).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncIterator, Callable

import anyio.to_thread

from batching.faults import FAULTS
from batching.request import Request, SamplingParams
from server.duration import parse_keep_alive
from server.errors import ApiError, context_overflow
from server.models.loaded import LoadedModel
from server.models.registry import ModelRegistry
from server.prompts import Prompt, encode, num_chars
from server.serving.background import priority_of
from server.serving.bias import ignore_eos_bias
from server.serving.limits import prompt_budget
from server.serving.options import ServingOptions
from speculative.grammar import Grammar, GrammarError
from speculative.llama import LlamaModel, ModelClosedError

INLINE_TOKENIZE_CHARS = 8192  # longer prompts are tokenized off the event loop


async def prepare(
    registry: ModelRegistry,
    model_name: str | None,
    prompt: Prompt | Callable[[LlamaModel], Prompt],
    params: SamplingParams | Callable[[LlamaModel], SamplingParams],
    options: ServingOptions,
    *,
    grammar: str | None = None,
    num_top_logprobs: int | None = None,
) -> tuple[LoadedModel, Request]:
    """Load the model if needed, build and check the prompt; nothing is queued yet.

    ``prompt`` is raw text, or chat messages rendered with the model's template, or
    what makes those from the model (its template, its vocabulary); ``params`` too
    may be made from the model (logit biases given as text): the one lease this takes
    serves all of it, within the body's timeout. ``grammar`` (GBNF) constrains the
    output; ``num_top_logprobs`` asks for logprobs.
    """
    loaded = await registry.get(model_name, options.timeout)
    try:
        if not loaded.model.generates:
            raise ApiError(
                400,
                f"model {loaded.name!r} is an embedding model ({loaded.model.architecture}, "
                "an encoder): it cannot generate text; send it to /v1/embeddings (or /api/embed)",
            )
        if callable(prompt):
            prompt = prompt(loaded.model)
        if callable(params):
            params = params(loaded.model)
        request = await _build(registry, loaded, prompt, params, options, grammar, num_top_logprobs)
    except BaseException:
        loaded.release()
        raise
    loaded.hold(request)
    if options.keep_alive is not None:  # the model's keep-alive from now on, as in Ollama
        loaded.keep_alive_s = parse_keep_alive(options.keep_alive)
    return loaded, request


async def _build(
    registry: ModelRegistry,
    loaded: LoadedModel,
    prompt: Prompt,
    params: SamplingParams,
    options: ServingOptions,
    grammar: str | None,
    num_top_logprobs: int | None,
) -> Request:
    model = loaded.model
    check_output_constraints(model, params, grammar)
    limit = loaded.ctx_per_seq
    asked = getattr(options, "context_limit", None)  # Ollama's num_ctx, at most the model's
    if asked is not None:
        limit = min(limit, asked)
    budget = prompt_budget(limit, params.max_tokens)  # what a trimmed chat may keep
    size = num_chars(prompt)
    try:
        if size is not None and size <= INLINE_TOKENIZE_CHARS:
            tokens = encode(model, prompt, budget)
        else:
            tokens = await anyio.to_thread.run_sync(lambda: encode(model, prompt, budget))
    except ModelClosedError as exc:  # a reload replaced the model while we held it
        raise ApiError(503, str(exc), {"Retry-After": "1"}) from None
    if delay := FAULTS.seconds("prepare_delay"):
        await asyncio.sleep(delay)
    if len(tokens) >= limit:
        param = "messages" if hasattr(options, "messages") else "prompt"  # the body's field
        raise context_overflow(len(tokens), limit, loaded.name, param)
    if asked is not None:  # the reply ends where the asked context does (finish: length)
        params = dataclasses.replace(params, max_tokens=min(params.max_tokens, limit - len(tokens)))
    server = registry.config.server
    # only the prototype's max_tokens can be above: the other families lower theirs
    # to the limit (server.serving.limits)
    if params.max_tokens > server.max_tokens_limit:
        raise ApiError(
            400,
            f"max_tokens: at most {server.max_tokens_limit} on this server, "
            f"got {params.max_tokens}",
        )
    if getattr(options, "ignore_eos", False):  # llama.cpp's extension field
        # the first call per model scans its vocabulary (0.2 s for Gemma's 262k): not here
        bias = params.logit_bias + await anyio.to_thread.run_sync(ignore_eos_bias, model)
        params = dataclasses.replace(params, logit_bias=bias)
    request = Request(model=loaded.name, prompt_tokens=tokens, params=params)
    request.grammar = grammar
    request.num_top_logprobs = num_top_logprobs
    request.is_speculative = options.speculative and grammar is None
    request.cache_prompt = options.cache_prompt
    request.priority = priority_of(options.priority)  # lowered for batches
    request.wants_progress = options.return_progress
    request.deadline = request.created_at + (options.timeout or server.request_timeout_s)
    return request


@contextlib.asynccontextmanager
async def leased_model(registry: ModelRegistry, name: str | None) -> AsyncIterator[LlamaModel]:
    """The loaded model, to read its vocabulary or template; its lease ends after."""
    loaded = await registry.get(name)
    try:
        yield loaded.model
    finally:
        loaded.release()


def check_output_constraints(
    model: LlamaModel, params: SamplingParams, grammar: str | None
) -> None:
    """A 400 for a grammar llama.cpp cannot parse or a biased token the model lacks."""
    for token, _ in params.logit_bias:
        if token >= model.num_vocab:
            raise ApiError(
                400, f"logit_bias.{token}: no such token; the model has {model.num_vocab}"
            )
    if grammar is not None:
        try:
            Grammar(model, grammar).close()
        except GrammarError as exc:
            raise ApiError(400, str(exc)) from None


def choices_of(request: Request, n: int) -> list[Request]:
    """The other n - 1 choices of ``request``: same prompt (its KV copied from the first
    choice's in the executor), sampled independently. A seed gives choice i seed + i, so
    seeded choices differ and each is reproducible."""
    params = request.params
    others = []
    for i in range(1, n):
        seed = None if params.seed is None else (params.seed + i) % 2**63
        other = Request(
            model=request.model,
            prompt_tokens=request.prompt_tokens,
            params=dataclasses.replace(params, seed=seed),
        )
        other.grammar = request.grammar
        other.num_top_logprobs = request.num_top_logprobs
        other.is_speculative = request.is_speculative
        other.cache_prompt = request.cache_prompt
        other.priority = request.priority
        other.deadline = request.deadline
        other.prompt_source = request
        others.append(other)
    return others
