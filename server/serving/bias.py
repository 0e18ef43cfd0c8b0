"""Logit biases the server adds on a client's behalf."""

from __future__ import annotations

import numpy as np

from speculative.llama import LlamaModel

BAN = -1e4  # a logit bias far beyond any real logit gap, finite so sampling stays finite


def ignore_eos_bias(model: LlamaModel) -> tuple[tuple[int, float], ...]:
    """Logit biases that ban every end-of-generation token (llama-server's ignore_eos),
    from the model's table (made once per model, by the first caller)."""
    return tuple((int(t), BAN) for t in np.flatnonzero(model.end_of_generation))
