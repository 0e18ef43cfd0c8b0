"""A prepared ``Request`` queued (or answered from the result cache), waited for, or
cancelled; what its reply counts. Preparing it is prepare.py, streaming it streams.py.

It imports nothing from ``server.api`` (a stream's frames are rendered there).
Shared by every API family: they differ in JSON shapes, not in how a request is
queued, awaited or cancelled.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from batching.batcher import BatcherStoppedError, QueueFullError
from batching.request import Request
from server.errors import ApiError
from server.models.loaded import LoadedModel
from server.models.registry import ModelRegistry
from server.result_cache import BYPASS, HIT, MISS, ResultCache
from server.serving.options import ServingOptions


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
