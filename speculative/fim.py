"""A model's fill-in-the-middle tokens (Qwen2.5 Coder, CodeLlama, StarCoder...): what
an infill prompt is built from, read from the GGUF's vocabulary by llama.cpp."""

from __future__ import annotations

from dataclasses import dataclass

import llama_cpp as C

from speculative.llama import LlamaModel


@dataclass(slots=True, frozen=True)
class FimTokens:
    prefix: int
    suffix: int
    middle: int
    repo: int | None  # repository name marker (repo-level FIM), where the model has one
    file_sep: int | None  # file separator, where the model has one
    bos: int | None  # the BOS, where the vocabulary adds one


def fim_tokens(model: LlamaModel) -> FimTokens | None:
    """The model's FIM tokens; None where it lacks the prefix, suffix or middle one."""

    def token(name: str) -> int | None:
        value = int(getattr(C, f"llama_vocab_fim_{name}")(model.vocab))
        return None if value == C.LLAMA_TOKEN_NULL else value

    pre, suf, mid = token("pre"), token("suf"), token("mid")
    if pre is None or suf is None or mid is None:
        return None
    bos = int(C.llama_vocab_bos(model.vocab)) if C.llama_vocab_get_add_bos(model.vocab) else None
    return FimTokens(pre, suf, mid, token("rep"), token("sep"), bos)
