"""Draft proposers: where the tokens the target model verifies come from.

Both answer one question for a set of running sequences: "what are the next
k tokens likely to be?". The n-gram proposer looks the answer up in the
sequence itself; the draft-model proposer asks a smaller model with the same
vocabulary, all sequences together in batched decodes of its own context.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

from batching.faults import FAULTS
from speculative.acceptance import Dist
from speculative.llama import LlamaContext, LlamaModel, ModelLoadError
from speculative.sampling import apply_penalties, distribution, draw, pick
from speculative.sequence import Sequence


@dataclass(slots=True)
class Draft:
    tokens: list[int]
    dists: list[Dist] | None  # q at each drafted position; None: point masses (n-gram, greedy)


class Proposer(Protocol):
    def propose(self, wanted: list[tuple[Sequence, int]]) -> dict[int, Draft]:
        """Up to k draft tokens for each (sequence, k); keyed by seq_id."""
        ...

    def rollback(self, seq: Sequence) -> None:
        """The target kept ``seq.num_cached`` tokens: forget drafted state past them."""
        ...

    def trim(self, seq_id: int, keep: int) -> None:
        """Keep only the first ``keep`` positions of ``seq_id`` (0: forget it entirely)."""
        ...

    def copy(self, src: int, dst: int) -> None:
        """``dst`` now starts from what ``src`` holds (the prefix cache moved it)."""
        ...

    def close(self) -> None: ...


class NgramProposer:
    """Prompt lookup decoding: continue the latest earlier occurrence of the suffix.

    For n from ``max_n`` down to ``min_n``, find the most recent earlier place
    where the sequence's last n tokens occurred and propose what followed
    there. The search runs in C (``bytes.rfind`` over int32 tokens).
    """

    def __init__(self, max_n: int = 4, min_n: int = 2) -> None:
        self.max_n, self.min_n = max_n, min_n

    def propose(self, wanted: list[tuple[Sequence, int]]) -> dict[int, Draft]:
        drafts = {}
        for seq, k in wanted:
            tokens = lookup(seq.tokens, k, self.max_n, self.min_n)
            if tokens:
                drafts[seq.seq_id] = Draft(tokens, None)
        return drafts

    def rollback(self, seq: Sequence) -> None:
        pass

    def trim(self, seq_id: int, keep: int) -> None:
        pass

    def copy(self, src: int, dst: int) -> None:
        pass

    def close(self) -> None:
        pass


def lookup(tokens: list[int], k: int, max_n: int, min_n: int) -> list[int]:
    data = np.asarray(tokens, dtype=np.int32).tobytes()
    size = len(tokens)
    for n in range(min(max_n, size - 1), min_n - 1, -1):
        suffix = data[(size - n) * 4 :]
        end = (size - 1) * 4  # a match must end before the last token: not the suffix itself
        while (at := data.rfind(suffix, 0, end)) >= 0:
            if at % 4 == 0:  # aligned on a token boundary
                start = at // 4 + n
                return tokens[start : start + k]
            end = at + len(suffix) - 1
    return []


class DraftModelProposer:
    """A smaller model drafts for every speculating sequence in batched decodes.

    Its context mirrors the target's sequence ids. Each proposal first feeds
    each sequence the tokens its draft KV lacks (the prompt, the tokens the
    target accepted or emitted since), then runs k single-token rounds, one
    ``llama_decode`` per round for all sequences.
    """

    def __init__(self, context: LlamaContext) -> None:
        self._ctx = context
        self._cached: dict[int, int] = {}  # seq_id -> leading tokens of seq.tokens in the draft KV

    def propose(self, wanted: list[tuple[Sequence, int]]) -> dict[int, Draft]:
        drafts = {seq.seq_id: Draft([], None if _is_exact(seq) else []) for seq, _ in wanted}
        self._catch_up([seq for seq, _ in wanted])
        active = [(seq, k) for seq, k in wanted if k > 0]
        while active:
            self._draft_round(active, drafts)
            active = [(s, k) for s, k in active if len(drafts[s.seq_id].tokens) < k]
        return drafts

    def _catch_up(self, seqs: list[Sequence]) -> None:
        """Feed every missing token but the last, in as few decodes as the budget allows."""
        pending = {s.seq_id: (s, self._cached.get(s.seq_id, 0)) for s in seqs}
        while True:
            tokens: list[int] = []
            positions: list[int] = []
            ids: list[int] = []
            budget = self._ctx.batch_tokens
            for seq_id, (seq, cached) in sorted(pending.items()):
                count = min(len(seq.tokens) - 1 - cached, budget)
                if count <= 0:
                    continue
                tokens += seq.tokens[cached : cached + count]
                positions += range(cached, cached + count)
                ids += [seq_id] * count
                pending[seq_id] = (seq, cached + count)
                budget -= count
            if not tokens:
                break
            self._ctx.decode(tokens, positions, ids, [False] * len(tokens))
        for seq_id, (_, cached) in pending.items():
            self._cached[seq_id] = cached

    def _draft_round(self, active: list[tuple[Sequence, int]], drafts: dict[int, Draft]) -> None:
        """Feed each sequence its newest token; sample one draft token from the logits."""
        order = sorted(active, key=lambda item: item[0].seq_id)  # in-order streams are fast
        tokens: list[int] = []
        positions: list[int] = []
        for seq, _ in order:
            drafted = drafts[seq.seq_id].tokens
            tokens.append(drafted[-1] if drafted else seq.tokens[-1])
            positions.append(len(seq.tokens) - 1 + len(drafted))
        self._ctx.decode(tokens, positions, [s.seq_id for s, _ in order], [True] * len(order))
        FAULTS.check("draft_error")  # fails with the draft KV ahead of what ``_cached`` says
        for row, (seq, _) in enumerate(order):
            draft = drafts[seq.seq_id]
            self._cached[seq.seq_id] = positions[row] + 1
            params = seq.request.params
            logits = apply_penalties(
                self._ctx.logits(row), seq.recent_tokens + draft.tokens, params
            )
            if draft.dists is None:  # greedy or seeded: what the target would pick, if q were p
                draft.tokens.append(pick(logits, params, seq.rng, positions[row] + 1))
            else:
                ids, probs = distribution(logits, params)
                draft.tokens.append(int(ids[draw(probs, seq.rng)]))
                draft.dists.append(Dist(ids, probs))

    def rollback(self, seq: Sequence) -> None:
        cached = self._cached.get(seq.seq_id, 0)
        if cached > seq.num_cached:
            self._ctx.drop(seq.seq_id, seq.num_cached)
            self._cached[seq.seq_id] = seq.num_cached

    def trim(self, seq_id: int, keep: int) -> None:
        self._ctx.drop(seq_id, keep)
        self._cached[seq_id] = min(self._cached.get(seq_id, 0), keep)

    def copy(self, src: int, dst: int) -> None:
        self._ctx.copy(src, dst)
        self._cached[dst] = self._cached.get(src, 0)

    def close(self) -> None:
        self._ctx.close()
        self._ctx.model.close()


def _is_exact(seq: Sequence) -> bool:
    """Verified by exact match (greedy or seeded), so no draft distribution is needed."""
    params = seq.request.params
    return params.is_greedy or params.seed is not None


def check_same_vocabulary(target: LlamaModel, draft: LlamaModel, names: tuple[str, str]) -> None:
    """Refuse a draft whose tokens do not mean what the target's tokens mean."""
    target_name, draft_name = names

    def refuse(why: str) -> ModelLoadError:
        return ModelLoadError(
            f"draft model {draft_name!r} cannot draft for {target_name!r}: {why}; "
            "a draft must share the target's vocabulary"
        )

    if target.num_vocab != draft.num_vocab:
        raise refuse(f"vocabulary sizes differ ({draft.num_vocab} vs {target.num_vocab})")
    if target.special_tokens() != draft.special_tokens():
        raise refuse("special tokens differ")
    step = max(1, target.num_vocab // 512)
    for token in range(0, target.num_vocab, step):
        if target.piece(token) != draft.piece(token):
            raise refuse(f"token {token} is {target.piece(token)!r} vs {draft.piece(token)!r}")
