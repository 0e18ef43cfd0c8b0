"""llama-server's ``timings`` object of a completion: prompt and generation speed."""

from __future__ import annotations

import time
from typing import Any

from batching.request import Request


def timings(request: Request, num_read: int | None = None) -> dict[str, Any]:
    """llama-server's ``timings``: prompt (computed, not cached) and generation speed;
    while the prompt is read (``num_read`` of its tokens in the cache), so far."""
    started, first, finished = request.started_at, request.first_token_at, request.finished_at
    prompt_n = request.num_prompt_tokens - request.num_cached_tokens
    prompt_ms = (first - started) * 1000 if first and started else 0.0
    if num_read is not None:
        prompt_n = num_read - request.num_cached_tokens
        prompt_ms = (time.monotonic() - started) * 1000 if started and prompt_n else 0.0
    predicted_n = request.num_output_tokens
    predicted_ms = round((finished - first) * 1000, 3) if finished and first else 0.0
    steps = max(predicted_n - 1, 0)
    return {
        "cache_n": request.num_cached_tokens,
        "prompt_n": prompt_n,
        "prompt_ms": round(prompt_ms, 3),
        "prompt_per_token_ms": round(prompt_ms / prompt_n, 3) if prompt_n else 0.0,
        "prompt_per_second": round(prompt_n * 1000 / prompt_ms, 2) if prompt_ms else 0.0,
        "predicted_n": predicted_n,
        "predicted_ms": predicted_ms,
        # the first token comes with the prompt; the time after it is n - 1 steps
        "predicted_per_token_ms": predicted_ms / steps if steps else 0.0,
        "predicted_per_second": steps * 1000 / predicted_ms if steps and predicted_ms else 0.0,
    }
