"""The schedule stage of a step: which tokens of which sequences go into one decode.

Every decoding sequence contributes its one pending token, in sequence-id order
(with one KV stream per sequence, llama.cpp runs an out-of-order or sparse batch
about twice as slowly); with a proposer (draft model or n-gram) a decoding
sequence may carry k drafted tokens after it, its k+1 positions all scored.
Prompt tokens of newly admitted sequences fill what is left of the batch, within
the step's budget (``speculative.budget``: near a target time while others
decode), in line by priority and then fewest tokens left, so a long prompt is fed over
several steps while everyone else keeps decoding; a prompt is cut only into parts of at
least ``MIN_PROMPT_TOKENS``, below which llama.cpp reads it at about half the speed, and
one too short to cut in two such parts goes whole. The first in line always moves. A
burst of short prompts beside decoding streams is then read in line, a few a step, so
the first of them answer while the rest are read (a burst of seven chat turns read in
one step gave every one its first token after the whole burst: later turns' TTFT p50
2.0 s, 0.6-0.7 s in line, AMD EPYC, 2026-12-08); with nothing decoding a step takes all
that fits, so a wave of requests starts together. A choice of an n > 1 request
copies its sibling's prompt KV once that is computed instead of computing it, and an
arrival whose prompt starts like a running sequence's tokens copies those positions
(``speculative.sharing``); the prompt being read for several such requests goes
first, and they count among those the budget weighs against the streams.
"""

from __future__ import annotations

import logging
import time

from speculative.adaptive import SpeculationPolicy, draft_lengths
from speculative.budget import MIN_PROMPT_TOKENS, StepBudget, in_line, shortest_first
from speculative.chunk import Chunk, by_seq_id
from speculative.prefix_cache import PrefixCache
from speculative.proposers import Draft, Proposer
from speculative.sequence import Sequence
from speculative.sharing import num_dependents
from speculative.stats import ExecutorStats

log = logging.getLogger(__name__)
# The fewest last prompt tokens worth padding to the attention tile (``padded_start``)
PAD_FROM = 48


class Scheduler:
    def __init__(
        self,
        name: str,
        batch_tokens: int,
        ctx_per_seq: int,
        prefix: PrefixCache,
        stats: ExecutorStats,
        budget: StepBudget,
        proposer: Proposer | None,
        policy: SpeculationPolicy | None,
        *,
        pad_short_reads: bool = False,
    ) -> None:
        self.name = name
        self._batch_tokens = batch_tokens
        self._ctx_per_seq = ctx_per_seq
        self._prefix = prefix
        self.stats = stats
        self.budget = budget
        self._proposer = proposer
        self._policy = policy
        self._pad_short_reads = pad_short_reads

    def schedule(self, running: list[Sequence]) -> list[Chunk]:
        """The next step's chunks: every decoding sequence's pending token (and drafts),
        then prompt tokens within the step's budget, the fewest tokens left first."""
        self._share_prompts(running)
        budget = self._batch_tokens
        # Tokens go in seq_id order, and new sequences take the lowest free id:
        # with one KV stream per sequence, llama.cpp runs an out-of-order or
        # sparse batch about twice as slowly (measured: 68 vs 136 ms at B=16).
        decoding = sorted((s for s in running if not s.is_prefilling), key=by_seq_id)
        budget -= len(decoding)
        drafts = self._propose(decoding, budget)
        chunks = [Chunk(s, s.num_cached, 1, drafts.get(s.seq_id)) for s in decoding]
        budget -= sum(len(d.tokens) for d in drafts.values())
        prefilling = [s for s in running if s.is_prefilling and s.prompt_source is None]
        if prefilling and budget > 0:
            now = time.monotonic()
            waits = [now - s.request.created_at for s in prefilling]
            # who waits for a first token: these prompts and the sequences that will copy
            # from one of them (``speculative.sharing``)
            dependents = num_dependents(running)
            needs = [s.num_pending for s in prefilling]
            priorities = [s.request.priority for s in prefilling]
            readers = [1 + dependents.get(s.seq_id, 0) for s in prefilling]
            # the step is weighed for the read at the head of the line and the requests
            # waiting on it: the others wait for their turn whatever this step carries
            head = in_line(needs, priorities, waits, readers)[0]
            room = budget
            budget = self.budget.prompt_tokens(len(decoding), room, max(waits), readers[head])
            shares = shortest_first(needs, priorities, waits, budget, readers, room)
            for seq, count in zip(prefilling, shares, strict=True):
                if count:
                    chunks.append(self._prompt_chunk(seq, count))
                    seq.request.num_prefill_steps += 1
        # All of them in seq_id order, prompt chunks among the decoding tokens: with a
        # KV stream per sequence llama.cpp cuts a batch into ubatches of consecutive
        # seq_ids with as many tokens each, and a prompt chunk placed after decoding
        # tokens of higher seq_ids broke that run into extra ubatches.
        chunks.sort(key=lambda c: c.seq.seq_id)
        return chunks

    def _prompt_chunk(self, seq: Sequence, count: int) -> Chunk:
        """The next ``count`` prompt tokens of ``seq``; the prompt's last part, when it is a
        little short of the attention tile and follows cached positions, starts early
        enough to fill the tile (``padded_start``)."""
        start = seq.num_cached
        if self._pad_short_reads and count == seq.num_pending:
            start = padded_start(seq.num_cached, count)
        return Chunk(seq, start, seq.num_cached + count - start)

    def _share_prompts(self, running: list[Sequence]) -> None:
        """Sequences waiting for another's KV (``Sequence.prompt_source``) copy it once the
        positions they take are computed; if that one ended first, they read their
        prompts themselves."""
        for seq in running:
            source = seq.prompt_source
            if source is None:
                continue
            is_running = source in running
            if is_running and source.num_cached < seq.num_shared:
                continue  # not yet
            seq.prompt_source = None
            keep = seq.num_shared
            if is_running and keep > seq.num_cached:
                self._prefix.share(source.seq_id, seq.seq_id, keep, had=seq.num_cached)
                seq.read_long = source.read_long
                self.stats.num_prompt_tokens_reused += keep - seq.num_cached
                self.stats.num_prompt_tokens_shared += keep - seq.num_cached
                seq.num_cached = seq.request.num_cached_tokens = keep

    def _propose(self, decoding: list[Sequence], budget: int) -> dict[int, Draft]:
        if self._proposer is None or self._policy is None:
            return {}
        wanted = draft_lengths(self._policy, decoding, budget, self._ctx_per_seq)
        if not wanted:
            return {}
        try:
            drafts = self._proposer.propose(wanted)
        except Exception:  # a broken draft costs speed, never the request
            log.exception("draft proposal failed on %s; decoding plainly", self.name)
            for seq, _ in wanted:  # its cache may hold half a round: rebuild it next time
                self._proposer.trim(seq.seq_id, 0)
            return {}
        return {seq_id: d for seq_id, d in drafts.items() if d.tokens}


def padded_start(num_cached: int, count: int) -> int:
    """Where to start reading ``count`` last prompt tokens after ``num_cached`` cached ones.

    llama.cpp's CPU flash attention reads a sequence's chunk of fewer than 64 queries (its
    tile, ``MIN_PROMPT_TOKENS``) one query at a time: a chat turn of 50-63 new tokens after
    a reused history cost 3.9-4.6 ms a token, a 64-token chunk 2.5-3.0 (AMD EPYC, 2 cores,
    SmolLM2 Q8_0, 600 positions cached, 2026-12-08). Reading the last few cached positions
    again, to fill the tile, is then cheaper than the slow path: at ``PAD_FROM`` tokens or
    more (64 at tile speed cost about what 43 cost below it). The positions read again get
    the KV a cold read of the prompt would give them."""
    if PAD_FROM <= count < MIN_PROMPT_TOKENS and num_cached >= MIN_PROMPT_TOKENS - count:
        return num_cached + count - MIN_PROMPT_TOKENS
    return num_cached
