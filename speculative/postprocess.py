"""The sample stage of a step, and what follows it: tokens appended, text, stop checks.

After a decode, every sequence whose pending tokens are all cached gets its next
token: plain ones all at once from the step's logits matrix (``speculative.picker``),
speculating ones by verifying their drafts (``speculative.acceptance``: accept a
prefix, roll the KV cache back past the first rejection). Tokens are then appended
and detokenized, stop strings and limits checked, and each sequence that ended is
retired through the executor's ``finish``. A failure while sampling or
detokenizing one sequence fails that request only.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from batching.bridge import Update
from batching.faults import FAULTS
from batching.request import FinishReason
from speculative.acceptance import verify
from speculative.adaptive import SpeculationPolicy
from speculative.chunk import Chunk
from speculative.llama import LlamaContext
from speculative.picker import Pick, pick_tokens
from speculative.proposers import Proposer
from speculative.sampling import logprobs_of, token_logprob
from speculative.sequence import Sequence
from speculative.stats import ExecutorStats
from speculative.topk import Matrix as Logits2D

log = logging.getLogger(__name__)
Finish = Callable[..., Update]  # Executor._finish(seq, reason, error=None, ..., text="")


class Postprocessor:
    def __init__(
        self,
        name: str,
        context: LlamaContext,
        stats: ExecutorStats,
        finish: Finish,
        proposer: Proposer | None,
        policy: SpeculationPolicy | None,
    ) -> None:
        self.name = name
        self._ctx = context
        self._model = context.model
        self.ctx_per_seq = context.ctx_per_seq
        self.stats = stats
        self._finish = finish
        self._proposer = proposer
        self._policy = policy
        self._pick_error = ""  # why the last row-by-row pick failed

    def run(self, chunks: list[Chunk]) -> list[Update]:
        """Sample every completed sequence's next token(s) and append them."""
        updates: list[Update | None] = []
        if not any(c.completes for c in chunks):
            for c in chunks:
                c.seq.num_cached = c.start + c.count  # a padded read starts before it
                updates.append(_progress(c.seq))
            return [u for u in updates if u is not None]
        matrix = self._ctx.logits_matrix()
        picks: list[Pick] = []
        for c in chunks:
            seq = c.seq
            if c.draft is not None:
                updates.append(self._guarded(seq, self._verify, c, matrix))
                continue
            seq.num_cached = c.start + c.count
            if c.completes:
                if not seq.request.output_tokens:  # the prompt's last part: all of it read
                    updates.append(_progress(seq))
                picks.append(Pick(seq, c.out_row, len(seq.tokens)))
            else:
                updates.append(_progress(seq))
        for p, token in zip(picks, self._pick(matrix, picks), strict=True):
            budget = p.seq.request.think_budget
            forced = budget.next_forced() if budget is not None else None
            token = token if forced is None else forced  # a spent budget closes the block
            if token is None:
                updates.append(self._finish(p.seq, FinishReason.ERROR, self._pick_error))
            else:
                updates.append(self._guarded(p.seq, self._advance, p.seq, [token], matrix, p.row))
        return [u for u in updates if u is not None]

    def _pick(self, matrix: Logits2D, picks: list[Pick]) -> list[int | None]:
        """Every pick's token in one batched pass; if that raises, each on its own, so a
        broken one fails its request only (None)."""
        try:
            FAULTS.check("pick_error")
            return list(pick_tokens(matrix, picks))
        except Exception:
            log.exception("batched sampling failed on %s; sampling row by row", self.name)
        out: list[int | None] = []
        for p in picks:
            try:
                FAULTS.check("pick_error")
                out.append(pick_tokens(matrix, [p])[0])
            except Exception as exc:
                log.exception("sampling failed for request %s", p.seq.request.id)
                self._pick_error = f"internal error: {exc}"
                out.append(None)
        return out

    def _guarded(
        self, seq: Sequence, stage: Callable[..., Update | None], *args: object
    ) -> Update | None:
        """Run one sequence's sampling or detokenizing; if it breaks, only its request fails.

        Under the request's lock: once the batcher's backstop has answered it (a step
        wedged past its deadline), nothing more is appended to what was replied.
        """
        try:
            with seq.request.lock:
                if seq.request.is_answered:
                    return self._finish(seq, FinishReason.TIMEOUT)
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
        if request.score_tokens and not request.output_tokens and tokens:
            request.token_scores = logprobs_of(matrix[first_row], request.score_tokens)
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
            piece = self._model.piece(token)
            if request.think_budget is not None:
                request.think_budget.observe(piece.decode(errors="ignore"))
            text += seq.text.feed(piece)
            if seq.text.is_stopped:
                return self._finish(seq, FinishReason.STOP, text=text)
            out_of_room = len(seq.tokens) >= self.ctx_per_seq
            if request.num_output_tokens >= params.max_tokens or out_of_room:
                return self._finish(seq, FinishReason.LENGTH, text=text)
        return Update(request, text, is_done=False) if text else None


def _progress(seq: Sequence) -> Update | None:
    """How much of a prompt being read is in the KV cache, for a request that asked."""
    request = seq.request
    return Update(request, "", False, seq.num_cached) if request.wants_progress else None
