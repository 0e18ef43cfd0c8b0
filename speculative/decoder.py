"""The decode stage of a step: the chunks packed into one batch, one ``llama_decode``.

Each chunk's tokens go in with their positions and sequence id; a token asks for
logits when its sequence samples after it (a chunk's last token once its prompt
is all fed; every drafted position of a speculating sequence). The logits then
come back as one matrix, a row per such token in batch order, and each chunk
remembers its first row (``Chunk.out_row``). When the KV cache has no room for
the whole step, the first half is decoded and the rest waits for later steps.
"""

from __future__ import annotations

import logging
import time

from batching.faults import FAULTS
from speculative.chunk import Chunk
from speculative.llama import DecodeError, LlamaContext
from speculative.prefix_cache import LONG_READ, PrefixCache
from speculative.proposers import Proposer
from speculative.stats import ExecutorStats

log = logging.getLogger(__name__)


class Decoder:
    def __init__(
        self,
        name: str,
        context: LlamaContext,
        prefix: PrefixCache,
        stats: ExecutorStats,
        proposer: Proposer | None,
    ) -> None:
        self.name = name
        self._ctx = context
        self._prefix = prefix
        self.stats = stats
        self._proposer = proposer

    def run(self, chunks: list[Chunk]) -> tuple[float, list[Chunk]]:
        """Decode; when the KV cache has no room for the whole step, decode the first
        half and defer the rest to later steps (their state is untouched)."""
        while True:
            try:
                if len(chunks) > 1 and FAULTS.fire("kv_full"):
                    raise DecodeError(1)
                return self._decode(chunks), chunks
            except DecodeError as exc:
                if exc.code != 1 or len(chunks) == 1:
                    raise
                log.warning(
                    "no KV room for %d sequences on %s; deferring half", len(chunks), self.name
                )
                chunks, deferred = chunks[: len(chunks) // 2], chunks[len(chunks) // 2 :]
                for chunk in deferred:
                    if chunk.draft is not None and self._proposer is not None:
                        self._proposer.rollback(chunk.seq)

    def _decode(self, chunks: list[Chunk]) -> float:
        tokens: list[int] = []
        positions: list[int] = []
        seq_ids: list[int] = []
        wants_logits: list[bool] = []
        num_outputs = 0  # logits rows come back in batch order, one per flagged token
        for c in chunks:
            c.out_row = num_outputs
            if c.draft is None and c.count == 1:  # a decoding sequence: the common case
                tokens.append(c.seq.tokens[c.start])
                positions.append(c.start)
                seq_ids.append(c.seq.seq_id)
                wants_logits.append(c.completes)
                num_outputs += c.completes
                continue
            n = c.num_tokens
            if c.start < c.seq.num_cached:  # a padded read: its first positions read again
                self._ctx.drop(c.seq.seq_id, c.start)
            c.seq.read_long |= n >= LONG_READ
            tokens += c.token_ids()
            positions += range(c.start, c.start + n)
            seq_ids += [c.seq.seq_id] * n
            # a speculating sequence needs logits at every position it verifies
            flags = [True] * n if c.draft else [False] * (n - 1) + [c.completes]
            wants_logits += flags
            num_outputs += sum(flags)
            if not c.draft:
                c.out_row = num_outputs - 1  # its one row, if it completes
        started, cpu_started = time.perf_counter(), time.thread_time()
        if FAULTS.fire("decode_error"):
            raise DecodeError(-3)
        self._ctx.decode(tokens, positions, seq_ids, wants_logits)
        self._prefix.after_decode()
        self.stats.decode_cpu_seconds += time.thread_time() - cpu_started
        return time.perf_counter() - started
