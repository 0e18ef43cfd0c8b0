"""One KV pool shared by the running sequences (llama.cpp's unified cache).

With ``kv_pool_tokens`` set, the context holds that many cells for all its
sequences together, instead of ``context_size`` cells reserved for each of
``max_batch_size`` sequences: memory follows what the requests hold, not the
worst case. Each sequence may still grow to ``context_size`` (at most the pool).

Before every step ``balance`` makes sure each sequence the step may carry has
its cells: a running sequence counts its tokens (prompt included, fed or not:
admission reserves the whole prompt) plus the most one step adds (its drafts).
When they do not fit,

1. idle prefix-cache contents go first, least recently used first (saved to the
   host store when worth keeping: ``PrefixCache.release``);
2. then the newest running sequence is **parked**: its KV cells are saved to
   host memory (``llama_state_seq_get_data``, a few ms for 2k tokens) and freed,
   and it is left out of steps until there is room again. Parked sequences
   resume oldest first, their state restored exactly, so their output is what
   it would have been (no recompute, no loss of the tokens already generated).

Why park the newest: the oldest have the most invested and finish first,
freeing cells; preempting the newest is what vLLM does too. Why not fail the
request: it was admitted, and waiting costs it latency only. A sequence alone
always fits (its length is capped by the context size, at most the pool), so
the oldest always makes progress and nothing waits forever.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from speculative.llama import LlamaContext
from speculative.prefix_cache import PrefixCache
from speculative.proposers import Proposer
from speculative.sequence import Sequence

log = logging.getLogger(__name__)
# room a parked sequence needs beyond its own cells before it resumes: without it, a
# sequence resumed into an exactly full pool would be parked again at the next step
RESUME_MARGIN = 32


@dataclass(slots=True)
class PoolStats:
    size: int = 0  # cells in the pool (0: a stream per sequence, no pool)
    used: int = 0  # cells the running sequences and idle caches held at the last step
    num_parked: int = 0  # times a running sequence was set aside for lack of cells
    num_resumed: int = 0
    parked_now: int = 0
    parked_bytes: int = 0  # host memory the parked sequences' states take now
    num_released_idle: int = 0  # idle cache contents given back to the pool


class KvPool:
    def __init__(
        self,
        ctx: LlamaContext,
        prefix: PrefixCache,
        proposer: Proposer | None,
        max_draft: int,
    ) -> None:
        self.size = ctx.pool_tokens
        self._ctx = ctx
        self._prefix = prefix
        self._proposer = proposer
        self._growth = max_draft if proposer is not None else 0
        self.stats = PoolStats(size=self.size)

    def balance(self, running: list[Sequence]) -> None:
        """Park and resume sequences (``running`` in admission order) so that every
        sequence left active has room for this step."""
        active = [s for s in running if s.parked_state is None]
        used = sum(self._need(s) for s in active) + self._prefix.idle_cells()
        if used > self.size:
            used -= self._release_idle(used - self.size)
        while used > self.size and len(active) > 1:
            victim = active.pop()  # the newest
            used -= self._need(victim)
            self._park(victim)
        for seq in running:
            if seq.parked_state is None:
                continue
            extra = self._need(seq) + RESUME_MARGIN
            if used + extra > self.size:
                used -= self._release_idle(used + extra - self.size)
            if used + extra > self.size and active:
                break  # first come, first resumed: no overtaking
            self._resume(seq)
            active.append(seq)
            used += self._need(seq)
        self.stats.used = used
        self.stats.parked_now = sum(s.parked_state is not None for s in running)
        self.stats.parked_bytes = sum(
            s.parked_state.nbytes for s in running if s.parked_state is not None
        )

    def _need(self, seq: Sequence) -> int:
        """Cells ``seq`` holds after the coming step, at most."""
        return len(seq.tokens) + self._growth

    def _release_idle(self, cells: int) -> int:
        freed = self._prefix.release(cells)
        if freed:
            self.stats.num_released_idle += 1
        return freed

    def _park(self, seq: Sequence) -> None:
        empty = np.empty(0, np.uint8)
        seq.parked_state = self._ctx.save(seq.seq_id) if seq.num_cached else empty
        self._ctx.drop(seq.seq_id)
        if self._proposer is not None:  # the draft model recomputes its copy on resume
            self._proposer.trim(seq.seq_id, 0)
        self.stats.num_parked += 1
        log.info(
            "KV pool full: parked sequence %d (%d tokens, %d bytes saved)",
            seq.seq_id,
            seq.num_cached,
            seq.parked_state.nbytes,
        )

    def _resume(self, seq: Sequence) -> None:
        state, seq.parked_state = seq.parked_state, None
        if state is not None and state.nbytes and not self._ctx.restore(state, seq.seq_id):
            # llama.cpp refused it (no room after all): recompute from the start
            log.warning("restoring parked sequence %d failed; recomputing it", seq.seq_id)
            self._ctx.drop(seq.seq_id)
            seq.num_cached = 0
        self.stats.num_resumed += 1
