"""Output log-probabilities in OpenAI's two shapes (chat and text completions).

The values are the log-softmax of the model's raw logits at each position,
before logit bias, penalties, temperature, top-k/top-p/min-p or a grammar
(llama-server's default too): what the model thinks, not what the sampler drew from.
"""

from __future__ import annotations

from typing import Any

from batching.request import Request, TokenLogprob
from speculative.llama import LlamaModel


class LogprobCursor:
    """Hands out a request's logprobs in order, each once, as a stream advances."""

    def __init__(self, model: LlamaModel, request: Request) -> None:
        self._model = model
        self._request = request
        self._sent = 0
        self._text_offset = 0

    @property
    def is_wanted(self) -> bool:
        return self._request.num_top_logprobs is not None

    def _take(self) -> list[TokenLogprob]:
        # the executor thread appends; a slice of what is there now is safe to read
        end = len(self._request.logprobs)
        taken = self._request.logprobs[self._sent : end]
        self._sent = end
        return taken

    def chat(self) -> dict[str, Any] | None:
        """``choice.logprobs`` of a chat reply or chunk: the tokens not yet handed out."""
        if not self.is_wanted:
            return None
        content = [
            self._entry(e.token, e.logprob)
            | {"top_logprobs": [self._entry(t, lp) for t, lp in e.top]}
            for e in self._take()
        ]
        return {"content": content, "refusal": None}

    def completion(self) -> dict[str, Any] | None:
        """``choice.logprobs`` of a text completion or chunk (the legacy shape)."""
        if not self.is_wanted:
            return None
        tokens, offsets = [], []
        taken = self._take()
        for e in taken:
            text = self._text(e.token)
            tokens.append(text)
            offsets.append(self._text_offset)
            self._text_offset += len(text)
        return {
            "tokens": tokens,
            "token_logprobs": [e.logprob for e in taken],
            "top_logprobs": [{self._text(t): lp for t, lp in e.top} for e in taken],
            "text_offset": offsets,
        }

    def llama(self) -> list[dict[str, Any]]:
        """llama-server's ``completion_probabilities`` of the tokens not yet handed out."""
        return [
            {"id": e.token, **self._entry(e.token, e.logprob)}
            | {"top_logprobs": [{"id": t, **self._entry(t, lp)} for t, lp in e.top]}
            for e in self._take()
        ]

    def _text(self, token: int) -> str:
        return self._model.piece(token).decode("utf-8", errors="replace")

    def _entry(self, token: int, logprob: float) -> dict[str, Any]:
        return {
            "token": self._text(token),
            "logprob": logprob,
            "bytes": list(self._model.piece(token)),
        }
