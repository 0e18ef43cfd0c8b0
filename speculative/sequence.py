"""Executor-side state of one running request: its tokens, KV progress, text."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from batching.request import Request
from speculative.grammar import Grammar
from speculative.text import TextAssembler


@dataclass(slots=True, eq=False)
class Sequence:
    request: Request
    seq_id: int  # llama.cpp sequence id; also the KV stream this request owns
    # Prompt then generated tokens. The KV cache holds the first ``num_cached``;
    # the rest are pending: the prompt not yet fed, or the last sampled token.
    tokens: list[int]
    text: TextAssembler
    num_cached: int = 0
    num_prompt: int = field(init=False)
    grammar: Grammar | None = None  # the request's grammar state, when it has one
    # the running sequence whose KV this one waits to copy, and how many of its leading
    # positions: another choice of an n > 1 request (its whole prompt less one token), or
    # a request in flight whose prompt starts the same way (``speculative.sharing``)
    prompt_source: Sequence | None = None
    num_shared: int = 0
    _rng: np.random.Generator | None = None  # made on first use: greedy ones never need it
    # set while a full KV pool keeps it out of steps: its cells, saved (``kv_pool``)
    parked_state: npt.NDArray[np.uint8] | None = None
    # some of its KV was read in a decode of LONG_READ tokens or more (``prefix_cache``)
    read_long: bool = False

    def __post_init__(self) -> None:
        self.num_prompt = len(self.tokens)

    @classmethod
    def start(cls, request: Request, seq_id: int) -> Sequence:
        return cls(
            request=request,
            seq_id=seq_id,
            tokens=list(request.prompt_tokens),
            text=TextAssembler(request.params.stop),
        )

    @property
    def rng(self) -> np.random.Generator:
        """The request's generator (seeded by its seed); unseeded ones draw OS entropy."""
        if self._rng is None:
            self._rng = np.random.default_rng(self.request.params.seed)
        return self._rng

    @property
    def num_pending(self) -> int:
        return len(self.tokens) - self.num_cached

    @property
    def is_prefilling(self) -> bool:
        return self.num_cached < self.num_prompt

    @property
    def recent_tokens(self) -> list[int]:
        """The window the repeat penalty looks at (prompt included, as llama-server does)."""
        n = self.request.params.repeat_last_n
        return self.tokens[-n:] if n > 0 else []
