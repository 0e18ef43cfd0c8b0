"""llama.cpp's grammar sampler for one sequence: which next tokens a GBNF grammar allows.

The sampler keeps the grammar's parse state; ``accept`` advances it by a
token. Checking the whole vocabulary costs a walk over every token's text, so
the executor first samples as usual and asks ``allows`` about that one token;
only when the grammar refuses it does it ``mask`` the whole row and sample
again (llama.cpp's common sampler does the same). For a draw from p this is
exact: x is kept with probability p(x) when allowed, and the redraw from the
masked row adds (1 - p(A)) p(x) / p(A), so x in A ends with p(x) / p(A).

Only tokens the grammar allows may be accepted: llama.cpp aborts the process
on an end-of-generation token the grammar does not allow, and throws on any
other refused token. End-of-generation tokens are never accepted here (they
end the sequence instead).
"""

from __future__ import annotations

import ctypes
import threading

import llama_cpp as C
import numpy as np
import numpy.typing as npt

from speculative.llama import LlamaModel
from speculative.sampling import Logits

# llama_token_data: {int32 id; float logit; float p}
_TOKEN_DATA = np.dtype([("id", np.int32), ("logit", np.float32), ("p", np.float32)])
ROOT = b"root"
SCAN = 512  # tokens judged first when the sampler needs only its top-k (see mask)


class GrammarError(ValueError):
    """The grammar text does not parse, or allows nothing."""


# Samplers alive in this process (made and not yet closed): a leak (an error path
# that forgot ``close``) shows as a count that stays up once the work is done.
_live_lock = threading.Lock()
_num_live = 0


def num_live_grammars() -> int:
    return _num_live


def _count_live(change: int) -> None:
    global _num_live
    with _live_lock:  # executor threads of several models may make and free at once
        _num_live += change


class Grammar:
    """One sequence's grammar state. Not thread-safe: its executor thread owns it."""

    def __init__(self, model: LlamaModel, text: str) -> None:
        self._ptr = C.llama_sampler_init_grammar(model.vocab, text.encode(), ROOT)
        if not self._ptr:
            raise GrammarError(
                "grammar: llama.cpp could not parse this GBNF (it needs a `root` rule; "
                "the server log has the parser's message)"
            )
        _count_live(1)
        self._num_vocab = model.num_vocab
        self._all: npt.NDArray[np.void] | None = None  # the whole vocabulary, made on first use
        self._one = np.zeros(1, _TOKEN_DATA)
        self._some = np.zeros(SCAN, _TOKEN_DATA)

    def close(self) -> None:
        if self._ptr:
            C.llama_sampler_free(self._ptr)
            self._ptr = None
            _count_live(-1)

    def _apply(self, data: npt.NDArray[np.void]) -> npt.NDArray[np.bool_]:
        """Run the grammar over ``data``; True where it allows the token."""
        data["logit"] = 0.0
        array = C.llama_token_data_array(
            data=data.ctypes.data_as(C.llama_token_data_p),
            size=len(data),
            selected=-1,
            sorted=False,
        )
        C.llama_sampler_apply(self._ptr, ctypes.byref(array))
        allowed: npt.NDArray[np.bool_] = np.isfinite(data["logit"])
        return allowed

    def allows(self, token: int) -> bool:
        self._one["id"] = token
        return bool(self._apply(self._one)[0])

    def mask(self, logits: Logits, need: int = 0) -> Logits:
        """A copy of ``logits`` with every token the grammar refuses at -inf.

        ``need`` > 0: the sampler looks only at the ``need`` likeliest allowed tokens
        (its top-k; 1 when greedy), so the grammar first judges the SCAN likeliest
        tokens alone, and when ``need`` of them pass, everything else is masked
        without a look: the same top-k, at a fraction of the cost on big vocabularies.
        """
        if 0 < need <= SCAN < len(logits):
            ids = np.argpartition(-logits, SCAN)[:SCAN]
            self._some["id"] = ids
            passed = ids[self._apply(self._some)]
            if len(passed) >= need:
                out = np.full_like(logits, -np.inf)
                out[passed] = logits[passed]
                return out
        if self._all is None:
            self._all = np.zeros(self._num_vocab, _TOKEN_DATA)
            self._all["id"] = np.arange(self._num_vocab, dtype=np.int32)
        allowed = self._apply(self._all)
        if not allowed.any():
            raise GrammarError("the grammar allows no next token (it cannot be completed)")
        return np.where(allowed, logits, -np.inf).astype(np.float32)

    def accept(self, token: int) -> None:
        C.llama_sampler_accept(self._ptr, token)
