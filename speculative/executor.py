"""The llama.cpp executor: one thread, one context, many sequences per decode.

Each step is ``schedule -> run -> postprocess``:

* schedule: every decoding sequence contributes its one pending token; the
  remaining token budget (``batch_tokens``) goes to prompt chunks of newly
  admitted sequences, oldest first, so a long prompt is fed over several steps
  while everyone else keeps decoding;
* with a proposer (draft model or n-gram), a decoding sequence may carry k
  drafted tokens after its pending one, and its k+1 positions are all scored;
* run: ONE ``llama_decode`` for all of it;
* postprocess: sample the next token of every sequence whose pending tokens
  are now all cached (for a speculating one: accept a prefix of its drafts
  and roll its KV cache back past the first rejection), detokenize, check
  stop conditions, free finished sequences' KV cells at once, and hand the
  step's updates to the event loop.
"""

from __future__ import annotations

import bisect
import logging
import queue
import threading
import time
from collections.abc import Callable

from batching.bridge import Update
from batching.faults import FAULTS
from batching.request import Failure, FinishReason, Request, RequestStatus
from speculative.acceptance import verify
from speculative.adaptive import SpeculationPolicy, draft_lengths
from speculative.budget import StepBudget, fair_shares
from speculative.chunk import Chunk, by_seq_id
from speculative.grammar import Grammar, GrammarError
from speculative.llama import DecodeError, LlamaContext
from speculative.picker import Pick, pick_tokens
from speculative.prefix_cache import PrefixCache, PrefixStats
from speculative.proposers import Draft, Proposer
from speculative.sampling import token_logprob
from speculative.sequence import Sequence
from speculative.stats import ExecutorStats
from speculative.topk import Matrix as Logits2D

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
        self._prefix = PrefixCache(context, prefix_cache_bytes, proposer, enabled=prefix_cache)
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
        self._pick_error = ""  # why the last row-by-row pick failed
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
            try:  # the route checked that it parses; a constrained request never speculates
                grammar = Grammar(self._model, request.grammar) if request.grammar else None
            except GrammarError as exc:
                self._publish([_failed_unstarted(request, str(exc), Failure.INTERNAL)])
                continue
            request.is_speculative = request.is_speculative and grammar is None
            source = next((s for s in self._running if s.request is request.prompt_source), None)
            placed = self._prefix.place(
                request.prompt_tokens,
                self._free_seq_ids,
                may_reuse=request.cache_prompt and source is None,
            )
            seq = Sequence.start(request, placed.seq_id)
            seq.grammar = grammar
            seq.prompt_source = source
            seq.num_cached = request.num_cached_tokens = placed.num_reused
            self.stats.num_prompt_tokens_reused += placed.num_reused
            request.status = RequestStatus.RUNNING
            request.started_at = time.monotonic()
            self.stats.num_prompt_tokens += request.num_prompt_tokens
            self._running.append(seq)

    def step(self) -> None:
        started, cpu_started = time.perf_counter(), time.thread_time()
        now = time.monotonic()
        FAULTS.delay("step_delay")
        cancelled = [s for s in self._running if s.request.is_cancel_requested]
        updates = [self._finish(s, FinishReason.CANCELLED) for s in cancelled]
        # whatever raises below, what already finished is published
        try:
            expired = [s for s in self._running if s.request.is_past_deadline(now)]
            updates += [self._finish(s, FinishReason.TIMEOUT) for s in expired]
            chunks = self._schedule()
            decode_s = 0.0
            num_generated = self.stats.num_generated_tokens
            if chunks:
                try:
                    decode_s, chunks = self._run_fitting(chunks)
                except Exception as exc:  # a failed decode fails its sequences, not the server
                    log.exception("decode failed on %s", self.name)
                    updates += [self._finish(c.seq, FinishReason.ERROR, str(exc)) for c in chunks]
                    chunks = []
                updates += self._postprocess(chunks)
            FAULTS.check("step_crash")
        finally:
            self._publish(updates)
        step_s = time.perf_counter() - started
        if self._policy is not None and chunks and not any(c.count > 1 for c in chunks):
            speculated = any(c.draft for c in chunks)
            emitted = self.stats.num_generated_tokens - num_generated
            self._policy.gate.record(speculated, step_s, emitted)
        if chunks and decode_s:
            prompt = [c for c in chunks if c.start < c.seq.num_prompt]
            self.budget.record(len(chunks) - len(prompt), sum(c.count for c in prompt), decode_s)
        self.stats.record_step(
            num_seqs=len(chunks),
            num_tokens=sum(c.num_tokens for c in chunks),
            step_s=step_s,
            decode_s=decode_s,
            cpu_s=time.thread_time() - cpu_started,
        )

    def _share_prompts(self) -> None:
        """Sequences waiting for another's prompt KV copy it once it is all computed
        (keeping one token to evaluate, for logits); if that one ended first, they
        compute their prompts themselves."""
        for seq in self._running:
            source = seq.prompt_source
            if source is None:
                continue
            if source in self._running and source.is_prefilling:
                continue  # not yet
            seq.prompt_source = None
            if source in self._running:
                keep = seq.num_prompt - 1
                self._prefix.share(source.seq_id, seq.seq_id, keep)
                seq.num_cached = seq.request.num_cached_tokens = keep
                self.stats.num_prompt_tokens_reused += keep

    def _schedule(self) -> list[Chunk]:
        self._share_prompts()
        budget = self._ctx.batch_tokens
        # Tokens go in seq_id order, and new sequences take the lowest free id:
        # with one KV stream per sequence, llama.cpp runs an out-of-order or
        # sparse batch about twice as slowly (measured: 68 vs 136 ms at B=16).
        decoding = sorted((s for s in self._running if not s.is_prefilling), key=by_seq_id)
        budget -= len(decoding)
        drafts = self._propose(decoding, budget)
        chunks = [Chunk(s, s.num_cached, 1, drafts.get(s.seq_id)) for s in decoding]
        budget -= sum(len(d.tokens) for d in drafts.values())
        prefilling = [s for s in self._running if s.is_prefilling and s.prompt_source is None]
        if prefilling and budget > 0:
            budget = self.budget.prompt_tokens(len(decoding), budget)
            needs = [s.num_pending for s in prefilling]
            priorities = [s.request.priority for s in prefilling]
            for seq, count in zip(prefilling, fair_shares(needs, priorities, budget), strict=True):
                if count:
                    chunks.append(Chunk(seq, seq.num_cached, count))
                    seq.request.num_prefill_steps += 1
        return chunks

    def _propose(self, decoding: list[Sequence], budget: int) -> dict[int, Draft]:
        if self._proposer is None or self._policy is None:
            return {}
        wanted = draft_lengths(self._policy, decoding, budget, self.ctx_per_seq)
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

    def _run_fitting(self, chunks: list[Chunk]) -> tuple[float, list[Chunk]]:
        """Decode; when the KV cache has no room for the whole step, decode the first
        half and defer the rest to later steps (their state is untouched)."""
        while True:
            try:
                if len(chunks) > 1 and FAULTS.fire("kv_full"):
                    raise DecodeError(1)
                return self._run(chunks), chunks
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

    def _run(self, chunks: list[Chunk]) -> float:
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

    def _postprocess(self, chunks: list[Chunk]) -> list[Update]:
        """Sample every completed sequence's next token(s) and append them."""
        updates: list[Update | None] = []
        if not any(c.completes for c in chunks):
            for c in chunks:
                c.seq.num_cached += c.count
                updates.append(_progress(c.seq))
            return [u for u in updates if u is not None]
        matrix = self._ctx.logits_matrix()
        picks: list[Pick] = []
        for c in chunks:
            seq = c.seq
            if c.draft is not None:
                updates.append(self._guarded(seq, self._verify, c, matrix))
                continue
            seq.num_cached += c.count
            if c.completes:
                picks.append(Pick(seq, c.out_row, len(seq.tokens)))
            else:
                updates.append(_progress(seq))
        for p, token in zip(picks, self._pick(matrix, picks), strict=True):
            if token is None:
                updates.append(self._finish(p.seq, FinishReason.ERROR, self._pick_error))
            else:
                updates.append(self._guarded(p.seq, self._advance, p.seq, [token], matrix, p.row))
        return [u for u in updates if u is not None]

    def _pick(self, matrix: Logits2D, picks: list[Pick]) -> list[int | None]:
        """Every pick's token in one batched pass; if that raises, each on its own, so a
        broken one fails its request only (None)."""
        try:
            return list(pick_tokens(matrix, picks))
        except Exception:
            log.exception("batched sampling failed on %s; sampling row by row", self.name)
        out: list[int | None] = []
        for p in picks:
            try:
                out.append(pick_tokens(matrix, [p])[0])
            except Exception as exc:
                log.exception("sampling failed for request %s", p.seq.request.id)
                self._pick_error = f"internal error: {exc}"
                out.append(None)
        return out

    def _guarded(
        self, seq: Sequence, stage: Callable[..., Update | None], *args: object
    ) -> Update | None:
        """Run one sequence's sampling or detokenizing; if it breaks, only its request fails."""
        try:
            FAULTS.check("sample_error")
            return stage(*args)
        except Exception as exc:
            log.exception("postprocess failed for request %s", seq.request.id)
            return self._finish(seq, FinishReason.ERROR, f"internal error: {exc}")

    def _verify(self, c: Chunk, matrix: Logits2D) -> Update | None:
        """Keep the drafts the target agrees with, plus its own next token."""
        assert c.draft is not None
        seq, draft = c.seq, c.draft
        params = seq.request.params
        emitted = verify(
            lambda i: matrix[c.out_row + i],
            draft.tokens,
            draft.dists,
            params,
            seq.recent_tokens,
            seq.rng,
            len(seq.tokens),
        )
        accepted = len(emitted) - 1
        self.stats.record_drafts(len(draft.tokens), accepted)
        seq.request.num_drafted_tokens += len(draft.tokens)
        seq.request.num_accepted_tokens += accepted
        assert self._policy is not None and self._proposer is not None
        self._policy.record(seq.seq_id, len(draft.tokens), accepted)
        # KV now holds pending + all drafts; keep pending + the accepted ones
        seq.num_cached = c.start + 1 + accepted
        if accepted < len(draft.tokens):
            self._ctx.drop(seq.seq_id, seq.num_cached)
        update = self._advance(seq, emitted, matrix, c.out_row)
        if not seq.request.status.is_done:  # still running: resync the proposer
            self._proposer.rollback(seq)
        return update

    def _advance(
        self, seq: Sequence, tokens: list[int], matrix: Logits2D, first_row: int
    ) -> Update | None:
        """Append sampled ``tokens`` to ``seq`` until one ends it; return what changed.

        ``matrix[first_row + i]`` is the raw logits ``tokens[i]`` was sampled from.
        """
        request = seq.request
        params = request.params
        if request.first_token_at is None:
            request.first_token_at = time.monotonic()
        end_of_generation = self._model.end_of_generation
        text = ""
        for i, token in enumerate(tokens):
            if end_of_generation[token]:
                return self._finish(seq, FinishReason.STOP, text=text)
            if seq.grammar is not None:
                seq.grammar.accept(token)
            if request.num_top_logprobs is not None:
                row = matrix[first_row + i]
                request.logprobs.append(token_logprob(row, token, request.num_top_logprobs))
            seq.tokens.append(token)
            request.output_tokens.append(token)
            self.stats.num_generated_tokens += 1
            text += seq.text.feed(self._model.piece(token))
            if seq.text.is_stopped:
                return self._finish(seq, FinishReason.STOP, text=text)
            out_of_room = len(seq.tokens) >= self.ctx_per_seq
            if request.num_output_tokens >= params.max_tokens or out_of_room:
                return self._finish(seq, FinishReason.LENGTH, text=text)
        return Update(request, text, is_done=False) if text else None

    def _finish(
        self,
        seq: Sequence,
        reason: FinishReason,
        error: str | None = None,
        failure: Failure | None = None,
        text: str = "",
    ) -> Update:
        """Retire ``seq`` now: its KV cells and sequence id are free for the next step."""
        if reason is FinishReason.ERROR:  # its KV may be half written: trust none of it
            self._prefix.forget(seq.seq_id)
        else:  # the next request may start from what it leaves
            self._prefix.keep(seq.seq_id, seq.tokens[: seq.num_cached])
            if self._proposer is not None:
                self._proposer.trim(seq.seq_id, seq.num_cached)
        if self._policy is not None:
            self._policy.forget(seq.seq_id)
        if seq.grammar is not None:
            seq.grammar.close()
        bisect.insort(self._free_seq_ids, seq.seq_id)
        self._running.remove(seq)
        request = seq.request
        if error is None:
            text += seq.text.finish()
        request.text = seq.text.text
        request.mark_done(reason, error, failure)
        return Update(request, text, is_done=True)


def _progress(seq: Sequence) -> Update | None:
    """How much of a prompt being read is in the KV cache, for a request that asked."""
    request = seq.request
    return Update(request, "", False, seq.num_cached) if request.wants_progress else None


SHUTDOWN = "the model is being unloaded (server shutting down or reloading); retry"


def _failed_unstarted(
    request: Request, reason: str, failure: Failure = Failure.UNAVAILABLE
) -> Update:
    request.mark_done(FinishReason.ERROR, reason, failure)
    return Update(request, "", is_done=True)
