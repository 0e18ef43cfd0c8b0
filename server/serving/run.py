"""From a validated body to a submitted ``Request``; waiting for it or streaming it.

It imports nothing from ``server.api`` (a stream's frames are rendered there);
it still reads starlette's request object for the registry, the cache header
and a client's disconnect.

Shared by the prototype API and the OpenAI-compatible one: they differ in
JSON shapes, not in how a request is prepared, queued, awaited or cancelled.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import anyio.to_thread

from batching.batcher import BatcherStoppedError, QueueFullError
from batching.faults import FAULTS
from batching.request import Request, SamplingParams
from server.duration import parse_keep_alive
from server.errors import ApiError, context_overflow
from server.models.loaded import LoadedModel
from server.models.registry import ModelRegistry
from server.prompts import Prompt, encode, num_chars
from server.result_cache import BYPASS, HIT, MISS, ResultCache
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


def usage(request: Request, *choices: Request) -> dict[str, Any]:
    """Token counts in OpenAI's shape; ``cached_tokens`` came from the prefix cache.
    Other ``choices`` of the same prompt add their output (the prompt counts once)."""
    completion = request.num_output_tokens + sum(c.num_output_tokens for c in choices)
    return {
        "prompt_tokens": request.num_prompt_tokens,
        "completion_tokens": completion,
        "total_tokens": request.num_prompt_tokens + completion,
        "prompt_tokens_details": {"cached_tokens": request.num_cached_tokens},
    }


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


async def merged_streams(
    requests: list[Request], keepalive_s: float | None = None
) -> AsyncIterator[tuple[int, str | Progress | None]]:
    """(index, piece) from several streamed requests as they come; (index, None) when
    request ``index`` is done. Leaving early cancels every request still running. One
    request also gives its progress and keep-alives (``stream_events``)."""
    if len(requests) == 1:  # the usual case: no pump task or second queue
        async for piece in stream_events(requests[0], keepalive_s):
            yield 0, piece
        yield 0, None
        return
    merged: asyncio.Queue[tuple[int, str | None]] = asyncio.Queue()

    async def pump(index: int, request: Request) -> None:
        async for piece in stream_text(request):
            merged.put_nowait((index, piece))
        merged.put_nowait((index, None))

    tasks = [asyncio.ensure_future(pump(i, r)) for i, r in enumerate(requests)]
    try:
        for _ in range(len(requests)):
            while (item := await merged.get())[1] is not None:
                yield item
            yield item
    finally:
        for task in tasks:
            task.cancel()
        cancel_all(requests)


def speculation_counts(request: Request) -> dict[str, Any]:
    counts: dict[str, Any] = {
        "drafted_tokens": request.num_drafted_tokens,
        "accepted_tokens": request.num_accepted_tokens,
    }
    if request.grammar is not None:
        counts["off"] = "grammar-constrained output does not speculate"
    return counts


def cache_for(
    registry: ModelRegistry, options: ServingOptions, *, no_store: bool = False
) -> ResultCache | None:
    """The result cache, unless the request (its body, or ``no_store``: HTTP's
    ``Cache-Control: no-store``) or the server opts out."""
    cache = registry.result_cache
    return None if cache is None or not options.cache or no_store else cache


def submit(
    loaded: LoadedModel,
    request: Request,
    *,
    stream: bool = False,
    cache: ResultCache | None = None,
) -> str:
    """Queue ``request`` (or answer it from ``cache``); returns the X-Cache verdict."""
    if stream:
        request.stream = asyncio.Queue()
    key = cache.key(request, loaded.identity) if cache is not None else None
    if cache is None or key is None:
        verdict = BYPASS
    elif cache.serve(key, request):
        cache.counts[HIT] += 1
        return HIT
    else:
        verdict = MISS
    if cache is not None:
        cache.counts[verdict] += 1
    try:
        loaded.batcher.submit(request)
    except QueueFullError as exc:
        loaded.drop(request)
        raise ApiError(
            503, f"model {loaded.name!r} is busy: {exc}; retry shortly", {"Retry-After": "1"}
        ) from None
    except BatcherStoppedError as exc:
        loaded.drop(request)
        raise ApiError(503, f"model {loaded.name!r}: {exc}", {"Retry-After": "1"}) from None
    if cache is not None and key is not None:
        cache.remember_when_done(key, request)
    return verdict


async def wait_done(
    request: Request, *others: Request, left: Callable[[], Awaitable[None]] | None = None
) -> Request:
    """Await a request (and the ``others`` of the same call); a client that leaves
    (``left`` returns when it does) or a cancelled handler cancels them all."""
    requests = [request, *others]
    watcher = asyncio.ensure_future(left()) if left is not None else None
    all_done = asyncio.gather(*(asyncio.shield(r.done) for r in requests))
    try:
        if watcher is not None:
            waiting: set[asyncio.Future[Any]] = {all_done, watcher}
            await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
            cancel_all(requests)  # the client left: free their sequences
        await all_done
        return request
    except asyncio.CancelledError:
        cancel_all(requests)
        raise
    finally:
        if watcher is not None:
            watcher.cancel()


def cancel_all(requests: list[Request]) -> None:
    for request in requests:
        if not request.done.done():
            request.cancel()


@dataclasses.dataclass(slots=True, frozen=True)
class Progress:
    """No new text yet: how many prompt tokens are read (None: only a keep-alive)."""

    processed: int | None

    def fields(self, request: Request) -> dict[str, Any]:
        """llama-server's ``prompt_progress`` object."""
        started = request.started_at or request.created_at
        return {
            "total": request.num_prompt_tokens,
            "cache": request.num_cached_tokens,
            "processed": self.processed,
            "time_ms": round((time.monotonic() - started) * 1000, 1),
        }


KEEPALIVE = Progress(None)


async def stream_events(
    request: Request, keepalive_s: float | None = None
) -> AsyncIterator[str | Progress]:
    """Pieces of text as they are decoded, prompt progress when the request asked for it,
    and before the first text a keep-alive every ``keepalive_s`` (a proxy then does not
    time out a long prefill or wait in the queue); leaving early cancels the sequence.

    Pieces that queued while the client lagged go out joined, as one frame.
    """
    queue = request.stream
    assert queue is not None
    has_text = False
    try:
        while True:
            if has_text or keepalive_s is None:
                item = await queue.get()
            else:
                try:
                    item = await asyncio.wait_for(queue.get(), keepalive_s)
                except TimeoutError:
                    yield KEEPALIVE
                    continue
            if item is None:
                return
            request.stream_read_at = time.monotonic()
            if isinstance(item, int):
                yield Progress(item)
                continue
            is_done = False
            if not queue.empty():
                parts = [item]
                while not queue.empty():
                    if (more := queue.get_nowait()) is None:
                        is_done = True
                        break
                    if isinstance(more, str):
                        parts.append(more)
                item = "".join(parts)
            has_text = True
            yield item
            if is_done:
                return
    finally:
        if not request.status.is_done:
            request.cancel()


async def stream_text(request: Request) -> AsyncIterator[str]:
    """``stream_events``' text only."""
    async for item in stream_events(request):
        if isinstance(item, str):
            yield item
