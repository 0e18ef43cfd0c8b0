"""What one sequence contributes to one decode step."""

from __future__ import annotations

from dataclasses import dataclass

from speculative.proposers import Draft
from speculative.sequence import Sequence


@dataclass(slots=True)
class Chunk:
    """The part of one sequence's pending tokens that goes into this step."""

    seq: Sequence
    start: int  # index into seq.tokens, == the KV position of the first token
    count: int  # tokens of seq.tokens in this step
    draft: Draft | None = None  # drafted tokens that follow them, to verify
    out_row: int = 0  # logits row of its first token that asked for logits

    @property
    def completes(self) -> bool:
        """After this chunk every token is cached and the next one can be sampled."""
        return self.start + self.count == len(self.seq.tokens)

    @property
    def num_tokens(self) -> int:
        return self.count + (len(self.draft.tokens) if self.draft else 0)

    def token_ids(self) -> list[int]:
        own = self.seq.tokens[self.start : self.start + self.count]
        return own + self.draft.tokens if self.draft else own


def by_seq_id(seq: Sequence) -> int:
    return seq.seq_id
