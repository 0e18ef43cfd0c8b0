"""The llama.cpp executor: one thread, one context, many sequences per decode.

The thread admits requests between steps and runs ``step``, whose stages live in
their own modules:

* schedule (``speculative.scheduler``): which tokens of which sequences go in:
  every decoding sequence's pending token (plus drafts, when a proposer drafts),
  then prompt tokens within the step's budget;
* decode (``speculative.decoder``): ONE ``llama_decode`` for all of it; when the
  KV cache has no room, half the step is deferred; before it, the step may wait
  for the event loop to write the last step's tokens (``speculative.handoff``);
* sample and advance (``speculative.postprocess``): the next token of every
  sequence whose pending tokens are all cached, drafts verified, text assembled,
  stop conditions checked;
* publish (``batching.bridge``): the step's updates handed to the event loop in
  one call; finished sequences' KV cells are free for the next step.
"""

from __future__ import annotations

import bisect
import logging
import queue
import threading
import time
from collections.abc import Callable

import numpy as np

from batching.bridge import Update
from batching.faults import FAULTS
from batching.request import Failure, FinishReason, Request, RequestStatus
from speculative import compute_threads
from speculative.adaptive import SpeculationPolicy
from speculative.budget import StepBudget
from speculative.chunk import Chunk
from speculative.decoder import Decoder
from speculative.grammar import Grammar, GrammarError
from speculative.handoff import Handoff, WaitWritten
from speculative.kv_pool import KvPool
from speculative.llama import LlamaContext
from speculative.postprocess import Postprocessor
from speculative.prefix_cache import PrefixCache, PrefixStats
from speculative.proposers import Proposer
from speculative.scheduler import Scheduler
from speculative.sequence import Sequence
from speculative.sharing import shared_source
from speculative.stats import ExecutorStats

log = logging.getLogger(__name__)


class Executor:
    def __init__(
        self,
        name: str,
        context: LlamaContext,
        num_seqs: int,
        publish: Callable[[list[Update]], None],
        proposer: Proposer | None = None,
        policy: SpeculationPolicy | None = None,
        *,
        prefix_cache: bool = True,
        prefix_cache_bytes: int = 0,
        max_step_ms: float | None = None,
        max_draft: int = 0,
        wait_written: WaitWritten | None = None,
    ) -> None:
        assert context.batch_tokens >= num_seqs, "every running sequence needs a slot per step"
        self.name = name
        self._ctx = context
        self._model = context.model
        self.ctx_per_seq = context.ctx_per_seq
        self._publish = publish
        self._proposer = proposer
        self._policy = policy
        self._inbox: queue.SimpleQueue[Request | None] = queue.SimpleQueue()
        self._free_seq_ids = list(range(num_seqs))  # ascending: see _schedule
        self.num_kv_cells = context.pool_tokens or self.ctx_per_seq * num_seqs
        self._prefix = PrefixCache(context, prefix_cache_bytes, proposer, enabled=prefix_cache)
        self.pool = (
            KvPool(context, self._prefix, proposer, max_draft) if context.pool_tokens else None
        )
        self._running: list[Sequence] = []  # admission order: prefill is first come first fed
        self._is_stopping = False
        self.crash: str | None = None  # why the thread died, if it did
        # admit() vs the dying thread's inbox drain, and stop() vs the thread's own
        # close: both pairs must not interleave.
        self._lock = threading.Lock()
        self._has_exited = False
        self._close_on_exit = False
        self.stats = ExecutorStats()
        self.budget = StepBudget(max_step_ms)
        self._scheduler = Scheduler(
            name,
            context.batch_tokens,
            self.ctx_per_seq,
            self._prefix,
            self.stats,
            self.budget,
            proposer,
            policy,
            pad_short_reads=context.report.attends_on_host,
        )
        self._decoder = Decoder(name, context, self._prefix, self.stats, proposer)
        self._postprocess = Postprocessor(name, context, self.stats, self._finish, proposer, policy)
        self.handoff = Handoff(wait_written)
        self._thread = threading.Thread(target=self._loop, name=f"executor-{name}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def admit(self, requests: list[Request]) -> None:
        """Any thread: queue requests to join at the next step (the batcher bounds the count)."""
        with self._lock:
            if not self._has_exited:
                for request in requests:
                    self._inbox.put(request)
                return
        # nobody will take them: fail them now
        self._publish([_failed_unstarted(r, self.crash or SHUTDOWN) for r in requests])

    @property
    def prefix_stats(self) -> PrefixStats:
        return self._prefix.stats

    @property
    def kv_resident_bytes(self) -> int | None:
        """Bytes of the KV cache in RAM now where its pages follow use (``kv_release``);
        None where all of it stays resident."""
        pages = self._ctx.pages
        return pages.resident_bytes() if pages is not None else None

    @property
    def kv_usage(self) -> float:
        """Share (0-1) of the KV cells the running sequences hold, their whole prompts
        counted (admission reserves them). Idle prefix-cache contents are left out: they
        are given back whenever a sequence needs room, so they are no pressure (vLLM's
        kv_cache_usage_perc leaves its cached free blocks out too). Read from other
        threads: a snapshot of the list, no lock, off by a step at most."""
        held = sum(len(s.tokens) for s in list(self._running) if s.parked_state is None)
        return min(1.0, held / self.num_kv_cells)

    @property
    def is_alive(self) -> bool:
        return self.crash is None and self._thread.is_alive()

    def stop(self, timeout: float = 10.0) -> bool:
        """Stop the thread and free the llama.cpp objects; True once they are freed.

        A thread still inside a step after ``timeout`` keeps them: it frees
        them itself when it gets out, never while it may touch them.
        """
        self._inbox.put(None)
        self._thread.join(timeout)
        with self._lock:
            if not self._has_exited:
                log.warning(
                    "executor of %s still busy after %.0f s; it frees later", self.name, timeout
                )
                self._close_on_exit = True
                return False
        self._close()
        return True

    def _close(self) -> None:
        self._ctx.close()
        if self._proposer is not None:
            self._proposer.close()
        self._model.close()

    # -- the thread ------------------------------------------------------------

    def _loop(self) -> None:
        reason = SHUTDOWN
        try:
            while not self._is_stopping:
                self._take_new(block=not self._running)
                FAULTS.check("executor_crash")
                if self._running and not self._is_stopping:
                    self.step()
        except BaseException as exc:  # a bug or a llama.cpp failure outside one request
            log.exception("executor of %s died", self.name)
            reason = f"the model's executor failed ({exc!r}); it is reloaded on next use"
            self.crash = reason
        updates = [
            self._finish(s, FinishReason.ERROR, reason, Failure.UNAVAILABLE)
            for s in list(self._running)
        ]
        with self._lock:  # from here on admit() fails requests itself
            self._has_exited = True
            while not self._inbox.empty():
                if (request := self._inbox.get_nowait()) is not None:
                    updates.append(_failed_unstarted(request, reason))
            close = self._close_on_exit
        self._publish(updates)
        if close:
            self._close()

    def _take_new(self, block: bool) -> None:
        """Admit what waits in the inbox (waiting for a first request when ``block``).

        Longest prompts first: they take the lowest free seq_ids, so prompts read in
        one step have lengths falling with the seq_id. With a KV stream per sequence
        llama.cpp cuts such a batch into ubatches of consecutive seq_ids with equal
        token counts; ragged, after the shortest length each leftover run became a
        ubatch of its own (8 for 16 prompts of 23-26 tokens, each reading every
        weight), where falling lengths leave one per distinct length."""
        waiting: list[Request] = []
        # idle: what the next arrivals would save before taking their slots is saved now,
        # one content at a time while nothing waits (a save is ~1.3 ms)
        while block and self._inbox.empty() and self._prefix.save_ahead(self._free_seq_ids):
            pass
        # idle, it still wakes to give back the KV pages of streams left empty
        timeout = self._ctx.release_idle()
        if block:  # idle: its OpenMP workers would slow other models' decodes meanwhile
            compute_threads.release()
        while True:
            try:
                request = self._inbox.get(block=block, timeout=timeout if block else None)
            except queue.Empty:
                break
            block = False
            if request is None:
                self._is_stopping = True
                break
            waiting.append(request)
        ordered = sorted(waiting, key=lambda r: -r.num_prompt_tokens)
        for i, request in enumerate(ordered):
            self._admit_waiting(request, coming=len(ordered) - 1 - i)

    def _admit_waiting(self, request: Request, coming: int = 0) -> None:
        """``coming``: how many more requests this admission places after this one."""
        assert self._free_seq_ids, "the batcher admitted more than max_batch_size"
        if request.is_answered:  # the backstop answered it while the executor was wedged
            self._publish([Update(request, "", is_done=True)])
            return
        try:
            self._admit_one(request, coming)
        except GrammarError as exc:
            self._publish([_failed_unstarted(request, str(exc), Failure.INTERNAL)])
        except Exception as exc:  # that request fails; the executor and the others go on
            log.exception("admitting request %s failed on %s", request.id, self.name)
            failed = f"internal error while admitting the request: {exc}"
            self._publish([_failed_unstarted(request, failed, Failure.INTERNAL)])

    def _admit_one(self, request: Request, coming: int = 0) -> None:
        """Give ``request`` a sequence; whatever raises on the way, what it took is given back
        (the grammar's C sampler, the sequence id, the slot's half-placed KV)."""
        # the route checked that it parses; a constrained request never speculates
        grammar = Grammar(self._model, request.grammar) if request.grammar else None
        free_before = list(self._free_seq_ids)
        try:
            request.is_speculative = request.is_speculative and grammar is None
            source = next((s for s in self._running if s.request is request.prompt_source), None)
            placed = self._prefix.place(
                request.prompt_tokens,
                self._free_seq_ids,
                may_reuse=request.cache_prompt and source is None,
                coming=coming,
            )
        except BaseException:
            if grammar is not None:
                grammar.close()
            for seq_id in set(free_before) - set(self._free_seq_ids):
                self._prefix.forget(seq_id)  # its KV may be half written: trust none of it
            self._free_seq_ids[:] = free_before
            raise
        seq = Sequence.start(request, placed.seq_id)
        seq.grammar = grammar
        seq.num_cached = request.num_cached_tokens = placed.num_reused
        seq.read_long = placed.read_long
        if source is not None:  # another choice of the same call: its whole prompt, less one
            seq.prompt_source, seq.num_shared = source, seq.num_prompt - 1
        elif request.cache_prompt and self._prefix.is_enabled:
            prompt = np.asarray(request.prompt_tokens, dtype=np.int32)
            found = shared_source(prompt, self._running, placed.num_reused, request.priority)
            if found is not None:
                seq.prompt_source, seq.num_shared = found
        self.stats.num_prompt_tokens_reused += placed.num_reused
        request.status = RequestStatus.RUNNING
        request.started_at = time.monotonic()
        self.stats.num_prompt_tokens += request.num_prompt_tokens
        self._running.append(seq)
        if request.wants_progress:  # the first report: what the cache gave, none read yet
            self._publish([Update(request, "", False, seq.num_cached)])

    def step(self) -> None:
        """schedule -> decode -> sample and advance -> publish, for every running sequence."""
        started, cpu_started = time.perf_counter(), time.thread_time()
        num_generated = self.stats.num_generated_tokens
        FAULTS.delay("step_delay")
        updates = self._retire(FinishReason.CANCELLED)
        chunks: list[Chunk] = []
        decode_s = waited_s = 0.0
        try:  # whatever raises below, what already finished is published
            updates += self._retire(FinishReason.TIMEOUT)
            if self.pool is not None:
                self.pool.balance(self._running)
            chunks = self._scheduler.schedule([s for s in self._running if s.parked_state is None])
            waited_s = self.handoff.before_decode(len(chunks))
            decode_s, chunks = self._decode(chunks, updates)
            updates += self._postprocess.run(chunks)
            FAULTS.check("step_crash")
        finally:
            self._publish(updates)
        self._record(chunks, decode_s, waited_s, started, cpu_started, num_generated)

    def _retire(self, reason: FinishReason) -> list[Update]:
        """Finish the sequences whose requests were cancelled, or are past their deadline."""
        if reason is FinishReason.CANCELLED:
            # answered by the backstop while a step was wedged: only the slot is left to free
            stopped = [
                s for s in self._running if s.request.is_cancel_requested or s.request.is_answered
            ]
        else:
            now = time.monotonic()
            stopped = [s for s in self._running if s.request.is_past_deadline(now)]
        return [self._finish(s, reason) for s in stopped]

    def _decode(self, chunks: list[Chunk], updates: list[Update]) -> tuple[float, list[Chunk]]:
        """The step's one decode; the chunks decoded (what did not fit waits). A failed
        decode fails its sequences (into ``updates``), not the server."""
        if not chunks:
            return 0.0, []
        try:
            return self._decoder.run(chunks)
        except Exception as exc:
            log.exception("decode failed on %s", self.name)
            updates += [self._finish(c.seq, FinishReason.ERROR, str(exc)) for c in chunks]
            return 0.0, []

    def _record(
        self,
        chunks: list[Chunk],
        decode_s: float,
        waited_s: float,
        started: float,
        cpu_started: float,
        num_generated: int,
    ) -> None:
        """What the step cost, for the counters, the budget and the gates that choose how
        steps run (speculation, the wait for the loop), which see decode-only steps."""
        step_s = time.perf_counter() - started
        if chunks and not any(c.count > 1 for c in chunks):
            emitted = self.stats.num_generated_tokens - num_generated
            self.handoff.record(len(chunks), waited_s > 0, step_s, emitted)
            if self._policy is not None:
                self._policy.gate.record(any(c.draft for c in chunks), step_s, emitted)
        if chunks and decode_s:
            prompt = [c for c in chunks if c.start < c.seq.num_prompt]
            self.budget.record(len(chunks) - len(prompt), sum(c.count for c in prompt), decode_s)
        self.stats.record_step(
            num_seqs=len(chunks),
            num_tokens=sum(c.num_tokens for c in chunks),
            step_s=step_s,
            decode_s=decode_s,
            cpu_s=time.thread_time() - cpu_started,
            loop_wait_s=waited_s,
        )

    def _finish(
        self,
        seq: Sequence,
        reason: FinishReason,
        error: str | None = None,
        failure: Failure | None = None,
        text: str = "",
    ) -> Update:
        """Retire ``seq`` now: its KV cells and sequence id are free for the next step."""
        if reason is FinishReason.ERROR or seq.parked_state is not None:
            self._prefix.forget(seq.seq_id)  # half written, or parked: its cells are gone
            seq.parked_state = None
        else:  # the next request may start from what it leaves
            self._prefix.keep(seq.seq_id, seq.tokens[: seq.num_cached], read_long=seq.read_long)
            if self._proposer is not None:
                self._proposer.trim(seq.seq_id, seq.num_cached)
        if self._policy is not None:
            self._policy.forget(seq.seq_id)
        if seq.grammar is not None:
            seq.grammar.close()
        bisect.insort(self._free_seq_ids, seq.seq_id)
        self._running.remove(seq)
        request = seq.request
        with request.lock:
            if not request.claim_answer():  # the backstop answered: its reply is the state
                return Update(request, "", is_done=True)
            if error is None:
                text += seq.text.finish()
            request.text, request.stop_word = seq.text.text, seq.text.stop_word
            request.mark_done(reason, error, failure)
        return Update(request, text, is_done=True)


SHUTDOWN = "the model is being unloaded (server shutting down or reloading); retry"


def _failed_unstarted(
    request: Request, reason: str, failure: Failure = Failure.UNAVAILABLE
) -> Update:
    with request.lock:
        if request.claim_answer():  # else the backstop answered it while it waited here
            request.mark_done(FinishReason.ERROR, reason, failure)
    return Update(request, "", is_done=True)
