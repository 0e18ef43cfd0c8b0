"""The llama.cpp executor: one thread, one context, many sequences per decode.

Each step is ``schedule -> run -> postprocess``:

* schedule: every decoding sequence contributes its one pending token; the
  remaining token budget (``batch_tokens``) goes to prompt chunks of newly
  admitted sequences, oldest first, so a long prompt is fed over several steps
  while everyone else keeps decoding;
* run: ONE ``llama_decode`` for all of it;
* postprocess: sample the next token of every sequence whose pending tokens
  are now all cached, detokenize, check stop conditions, free finished
  sequences' KV cells at once, and hand the step's updates to the event loop.
"""

from __future__ import annotations

import heapq
import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from batching.bridge import Update
from batching.request import FinishReason, Request, RequestStatus
from speculative.llama import LlamaContext
from speculative.sampling import sample
from speculative.sequence import Sequence
from speculative.stats import ExecutorStats

log = logging.getLogger(__name__)


@dataclass(slots=True)
class Chunk:
    """The part of one sequence's pending tokens that goes into this step."""

    seq: Sequence
    start: int  # index into seq.tokens, == the KV position of the first token
    count: int

    @property
    def completes(self) -> bool:
        """After this chunk every token is cached and the next one can be sampled."""
        return self.start + self.count == len(self.seq.tokens)


class Executor:
    def __init__(
        self,
        name: str,
        context: LlamaContext,
        num_seqs: int,
        publish: Callable[[list[Update]], None],
    ) -> None:
        assert context.batch_tokens >= num_seqs, "every running sequence needs a slot per step"
        self.name = name
        self._ctx = context
        self._model = context.model
        self.ctx_per_seq = context.ctx_per_seq
        self._publish = publish
        self._inbox: queue.SimpleQueue[Request | None] = queue.SimpleQueue()
        self._free_seq_ids = list(range(num_seqs))  # a min-heap: see _schedule
        self._running: list[Sequence] = []  # admission order: prefill is first come first fed
        self._is_stopping = False
        self.stats = ExecutorStats()
        self._thread = threading.Thread(target=self._loop, name=f"executor-{name}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def admit(self, requests: list[Request]) -> None:
        """Any thread: queue requests to join at the next step (the batcher bounds the count)."""
        for request in requests:
            self._inbox.put(request)

    def stop(self, timeout: float = 10.0) -> None:
        self._inbox.put(None)
        self._thread.join(timeout)
        self._ctx.close()

    # -- the thread ------------------------------------------------------------

    def _loop(self) -> None:
        while not self._is_stopping:
            self._take_new(block=not self._running)
            if self._running and not self._is_stopping:
                self.step()
        leftovers = list(self._running)
        self._publish(
            [self._finish(s, FinishReason.ERROR, "server shutting down") for s in leftovers]
        )

    def _take_new(self, block: bool) -> None:
        while True:
            try:
                request = self._inbox.get(block=block)
            except queue.Empty:
                return
            block = False
            if request is None:
                self._is_stopping = True
                return
            assert self._free_seq_ids, "the batcher admitted more than max_batch_size"
            seq = Sequence.start(request, heapq.heappop(self._free_seq_ids))
            request.status = RequestStatus.RUNNING
            request.started_at = time.monotonic()
            self._running.append(seq)

    def step(self) -> None:
        started = time.perf_counter()
        cancelled = [s for s in self._running if s.request.is_cancel_requested]
        updates = [self._finish(s, FinishReason.CANCELLED) for s in cancelled]
        chunks = self._schedule()
        decode_s = 0.0
        if chunks:
            try:
                decode_s = self._run(chunks)
            except Exception as exc:  # a failed decode fails the step's sequences, not the server
                log.exception("decode failed on %s", self.name)
                updates += [self._finish(c.seq, FinishReason.ERROR, str(exc)) for c in chunks]
                chunks = []
            updates += self._postprocess(chunks)
        self._publish(updates)
        self.stats.record_step(
            num_seqs=len(chunks),
            num_tokens=sum(c.count for c in chunks),
            step_s=time.perf_counter() - started,
            decode_s=decode_s,
        )

    def _schedule(self) -> list[Chunk]:
        budget = self._ctx.batch_tokens
        # Tokens go in seq_id order, and new sequences take the lowest free id:
        # with one KV stream per sequence, llama.cpp runs an out-of-order or
        # sparse batch about twice as slowly (measured: 68 vs 136 ms at B=16).
        decoding = sorted((s for s in self._running if not s.is_prefilling), key=_by_seq_id)
        chunks = [Chunk(s, s.num_cached, 1) for s in decoding]
        budget -= len(chunks)
        for seq in self._running:
            if budget <= 0:
                break
            if seq.is_prefilling:
                count = min(seq.num_pending, budget)
                chunks.append(Chunk(seq, seq.num_cached, count))
                budget -= count
        return chunks

    def _run(self, chunks: list[Chunk]) -> float:
        tokens: list[int] = []
        positions: list[int] = []
        seq_ids: list[int] = []
        wants_logits: list[bool] = []
        for c in chunks:
            tokens += c.seq.tokens[c.start : c.start + c.count]
            positions += range(c.start, c.start + c.count)
            seq_ids += [c.seq.seq_id] * c.count
            wants_logits += [False] * (c.count - 1) + [c.completes]
        started = time.perf_counter()
        self._ctx.decode(tokens, positions, seq_ids, wants_logits)
        return time.perf_counter() - started

    def _postprocess(self, chunks: list[Chunk]) -> list[Update]:
        updates = []
        row = -1
        for c in chunks:
            row += c.count
            seq = c.seq
            seq.num_cached += c.count
            if not c.completes:
                continue
            try:
                update = self._advance(seq, row)
            except Exception as exc:  # sampling or detokenizing broke: this request only
                log.exception("postprocess failed for request %s", seq.request.id)
                update = self._finish(seq, FinishReason.ERROR, f"internal error: {exc}")
            if update is not None:
                updates.append(update)
        return updates

    def _advance(self, seq: Sequence, row: int) -> Update | None:
        """Sample the next token of ``seq`` from logits ``row``; return what changed."""
        request = seq.request
        params = request.params
        token = sample(self._ctx.logits(row), params, seq.rng, seq.recent_tokens)
        if request.first_token_at is None:
            request.first_token_at = time.monotonic()
        if self._model.is_end_of_generation(token):
            return self._finish(seq, FinishReason.STOP)
        seq.tokens.append(token)
        request.output_tokens.append(token)
        self.stats.num_generated_tokens += 1
        text = seq.text.feed(self._model.piece(token))
        if seq.text.is_stopped:
            return self._finish(seq, FinishReason.STOP, text=text)
        if request.num_output_tokens >= params.max_tokens or len(seq.tokens) >= self.ctx_per_seq:
            return self._finish(seq, FinishReason.LENGTH, text=text)
        return Update(request, text, is_done=False) if text else None

    def _finish(
        self, seq: Sequence, reason: FinishReason, error: str | None = None, text: str = ""
    ) -> Update:
        """Retire ``seq`` now: its KV cells and sequence id are free for the next step."""
        self._ctx.drop(seq.seq_id)
        heapq.heappush(self._free_seq_ids, seq.seq_id)
        self._running.remove(seq)
        request = seq.request
        if error is None:
            text += seq.text.finish()
        request.text = seq.text.text
        request.finish_reason = reason
        request.error = error
        request.status = {
            FinishReason.CANCELLED: RequestStatus.CANCELLED,
            FinishReason.ERROR: RequestStatus.FAILED,
        }.get(reason, RequestStatus.FINISHED)
        request.finished_at = time.monotonic()
        return Update(request, text, is_done=True)

    @property
    def num_running(self) -> int:
        return len(self._running)


def _by_seq_id(seq: Sequence) -> int:
    return seq.seq_id
