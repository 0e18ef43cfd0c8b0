"""How many tokens a reply may have: one rule for every API family.

A client that sets no output limit gets as many tokens as fit, as OpenAI's chat,
llama-server (``n_predict: -1``) and Ollama (``num_predict: -1``) give: up to the
server's ``max_tokens_limit``, and the engine ends every reply at the end of its
context (finish reason ``length``) in any case. No family caps a reply at a
number of its own. A field with a default that its API documents (OpenAI's
legacy ``/v1/completions`` 16, the prototype's 128) is a limit the client set.
The prototype's ``/generate`` refuses a ``max_tokens`` above the server's limit
with a 400 (documented in docs/reliability.md); the other families clamp it.
"""

from __future__ import annotations

# The largest output limit a body may carry: above the server's limit it is lowered
# (below), so only a number no client means (a typo of several digits) is refused.
# Claude Code sends 32,000 or 64,000; Anthropic's newest models take 128,000.
MAX_ASKED_TOKENS = 1 << 20


def max_output_tokens(server_limit: int, *asked: int | None) -> int:
    """The first of ``asked`` that the client set (None: not set, in the family's order
    of precedence), at most ``server_limit``; none set: ``server_limit``.

    A client's limit is an upper bound, not a demand: Claude Code sends 32,000 (64,000
    for some models) on every turn, and llama-server and Ollama answer a limit above
    what they can give by stopping at the context's end, never with a 400.
    """
    return min(next((n for n in asked if n is not None), server_limit), server_limit)


def prompt_budget(ctx_per_seq: int, max_tokens: int) -> int:
    """How many tokens a chat trimmed to fit (``truncate``) may keep: the context less
    the room for the reply, that room at most half the context, so that a reply asked
    for as many tokens as fit still keeps half a context of history."""
    return ctx_per_seq - min(max_tokens, ctx_per_seq // 2)
