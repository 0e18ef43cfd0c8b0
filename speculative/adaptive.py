"""When and how much to speculate: adaptive draft lengths and a cost gate.

Two loops, both cheap:

* per sequence, the draft length follows acceptance: all k accepted -> 2k (up to
  the maximum; +1 took six steps back to 8 after one miss, longer than a probe),
  otherwise k shrinks to what was accepted plus one; a sequence whose drafts
  keep failing (acceptance EMA below ``min_acceptance``) pauses for a while,
  then probes again with one token;
* per model, a cost gate compares measured seconds per emitted token of
  speculative steps with plain ones, and switches speculation off while it
  does not pay (a same-size draft on a compute-bound CPU, say), re-probing
  now and then. Speculation is also off when more than ``max_batch``
  sequences run: a CPU step is then compute-bound, and verifying k+1
  positions per sequence costs about k+1 times as much.
"""

from __future__ import annotations

from dataclasses import dataclass

from speculative.cost_gate import CostGate
from speculative.sequence import Sequence

EMA = 0.2  # weight of the newest observation


@dataclass(slots=True)
class SeqSpeculation:
    length: int
    acceptance: float = 1.0  # EMA of accepted / drafted
    paused_steps: int = 0


class SpeculationPolicy:
    def __init__(
        self,
        max_draft: int,
        max_batch: int,
        *,
        is_adaptive: bool = True,
        min_acceptance: float = 0.3,
        pause: int = 16,
    ) -> None:
        self.is_adaptive = is_adaptive
        self.max_draft = max_draft
        self.max_batch = max_batch
        self.min_acceptance = min_acceptance
        self.pause = pause
        self.gate = CostGate()
        self._seqs: dict[int, SeqSpeculation] = {}

    def draft_length(self, seq_id: int, wants: bool, num_running: int) -> int:
        """Tokens to draft for this sequence in this step (0: decode plainly)."""
        if not wants or num_running > self.max_batch:
            return 0
        if not self.is_adaptive:
            return self.max_draft
        if not self.gate.is_on:
            return 0
        state = self._seqs.setdefault(seq_id, SeqSpeculation(self.max_draft))
        if state.paused_steps > 0:
            state.paused_steps -= 1
            return 0
        return state.length

    def record(self, seq_id: int, drafted: int, accepted: int) -> None:
        state = self._seqs.get(seq_id)
        if state is None or drafted == 0:
            return
        state.acceptance = (1 - EMA) * state.acceptance + EMA * accepted / drafted
        state.length = min(self.max_draft, 2 * drafted) if accepted == drafted else accepted + 1
        if state.acceptance < self.min_acceptance:
            state.paused_steps = self.pause
            state.length = 1
            state.acceptance = self.min_acceptance  # one good probe resumes speculation

    def forget(self, seq_id: int) -> None:
        self._seqs.pop(seq_id, None)


def draft_lengths(
    policy: SpeculationPolicy, decoding: list[Sequence], budget: int, ctx_per_seq: int
) -> list[tuple[Sequence, int]]:
    """(sequence, k) for every sequence that drafts this step, within the token budget."""
    wanted = []
    for seq in decoding:
        request = seq.request
        k = policy.draft_length(seq.seq_id, request.is_speculative, len(decoding))
        # never draft past max_tokens or the context: those tokens could not be kept
        room = (
            min(
                request.params.max_tokens - request.num_output_tokens, ctx_per_seq - len(seq.tokens)
            )
            - 1
        )
        k = min(k, room, budget)
        if k > 0:
            wanted.append((seq, k))
            budget -= k
    return wanted
