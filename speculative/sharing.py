"""Prompts read once among requests in flight.

The prefix cache (``speculative.prefix_cache``) reuses what a *finished* request left
in its slot. Requests that arrive together do not find each other there: eight chat
turns that open with the same 450-token system prompt would each read it (eight
times the work, and the last one's first token waits for all of it). Here an
arrival whose prompt starts like the tokens of a sequence already running, by at
least ``MIN_REUSE`` tokens more than the prefix cache gave it, waits for that
sequence to have computed those positions, then copies them (``PrefixCache.share``,
a KV copy) and reads only the rest of its own prompt. SGLang's scheduler orders
requests that share a prefix so it is computed once; vLLM shares KV blocks as soon
as they are computed; this is the same idea on one KV stream per sequence.

The copied positions are exactly what the prefix cache would give the same prompt
sent right after the source finished (the same KV, read the same way), so greedy
text matches that; against a cold read of the whole prompt it carries llama-server's
``cache_prompt`` caveat, and the same exception as the prefix cache: a prompt
shorter than ``LONG_READ`` never takes KV that was read in a long decode.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import numpy.typing as npt

from speculative.prefix_cache import LONG_READ, MIN_REUSE, common_prefix
from speculative.sequence import Sequence


def shared_source(
    prompt: npt.NDArray[np.int32],
    running: Iterable[Sequence],
    num_reused: int,
    priority: int = 0,
) -> tuple[Sequence, int] | None:
    """The running sequence to copy ``prompt``'s prefix from, and how many positions,
    or None where none starts it with ``MIN_REUSE`` tokens more than ``num_reused``
    (what the prefix cache already put in place). Ties go to the sequence that has
    computed the most of it: its copy comes soonest. A request of ``priority`` never
    waits on a lower-priority read that has not computed the positions yet: prompts
    of higher priorities go first, and it would wait behind them."""
    limit = len(prompt) - 1  # one prompt token left to evaluate: sampling needs its logits
    short = len(prompt) < LONG_READ
    best: Sequence | None = None
    best_n = num_reused + MIN_REUSE - 1
    for seq in running:
        if seq.prompt_source is not None or seq.parked_state is not None:
            continue  # it holds nothing of its own yet, or its KV is out of the cache
        if short and seq.read_long:
            continue
        # n >= best_n needs position best_n - 1 to match: an O(1) test that spares the
        # array copy of every running sequence's tokens at each admission
        at = best_n - 1
        if at >= limit or len(seq.tokens) <= at or seq.tokens[at] != prompt[at]:
            continue
        n = min(common_prefix(np.asarray(seq.tokens, dtype=np.int32), prompt), limit)
        if seq.request.priority < priority and seq.num_cached < n:
            continue
        if n > best_n or (n == best_n and best is not None and seq.num_cached > best.num_cached):
            best, best_n = seq, n
    return None if best is None else (best, best_n)


def num_dependents(running: Iterable[Sequence]) -> dict[int, int]:
    """seq_id -> how many sequences wait to copy from it."""
    counts: dict[int, int] = {}
    for seq in running:
        if seq.prompt_source is not None:
            key = seq.prompt_source.seq_id
            counts[key] = counts.get(key, 0) + 1
    return counts
