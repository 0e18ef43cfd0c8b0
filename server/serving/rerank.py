"""Documents ranked by relevance to a query, without HTTP: what llama-server's, Jina's,
Cohere's and TEI's rerank routes share.

The model decides how:

- **A model that generates** is asked, once per document, whether the document meets
  the query, and the first token of its answer is read from the logits, not sampled:
  relevance = P(yes) / (P(yes) + P(no)), over the single-token spellings of each
  answer: how Qwen3-Reranker scores, with a plain question any instruct model follows
  (see ``QUESTION``). The documents' requests are queued together, in waves of the
  model's batch size, so that they share the batch's steps.
- **An embedding model** (an encoder: all-MiniLM) ranks by the cosine of the query's
  and each document's unit vectors, a bi-encoder's ranking.

A reranker GGUF (llama.cpp's rank pooling, a cross-encoder's classifier head) is not
served yet: no such model ships here to test it on.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import numpy as np

from batching.request import Failure, FinishReason, Request, SamplingParams
from server.errors import ApiError, context_overflow
from server.models.loaded import LoadedModel
from server.models.registry import ModelRegistry
from server.serving.embeddings import embed_texts
from server.serving.options import ServingOptions
from server.serving.prepare import leased_model, prepare
from server.serving.run import cancel_all, submit, wait_done
from speculative.llama import LlamaModel
from speculative.prompt import Messages

# Measured on the shipped Qwen2.5 Coder 0.5B (2026-12-07, six query sets): this plain
# question, the document first, ranked the relevant document first in 6 of 6 sets;
# Qwen3-Reranker's own prompt (instruction and query first, which would share more of
# the prompt between documents) in 3 of 6: only a model trained on it follows it.
QUESTION = (
    "Document: {document}\n\nQuery: {query}\n\n"
    "Is the document relevant to the query? Answer yes or no."
)
YES = ("yes", "Yes", "YES", " yes", " Yes")
NO = ("no", "No", "NO", " no", " No")


@dataclass(slots=True, frozen=True)
class Ranked:
    """One document's place: its index in the request, its relevance score (0-1 from a
    generating model, a cosine from an embedding model) and the raw score (the log-odds
    of yes over no; the cosine again)."""

    index: int
    score: float
    raw: float


@dataclass(slots=True, frozen=True)
class Ranking:
    model: str
    results: list[Ranked]  # most relevant first
    num_tokens: int  # prompt tokens read for all documents (the usage)


async def rerank(
    registry: ModelRegistry,
    model: str | None,
    query: str,
    documents: list[str],
    options: ServingOptions,
    *,
    left: Callable[[], Awaitable[None]] | None = None,
) -> Ranking:
    """``documents`` ranked by relevance to ``query`` (see the module); ``left`` returns
    when the client has gone, which cancels the documents' requests."""
    name = registry.resolve_name(model)
    async with leased_model(registry, name) as llama:  # loads it, or it is loaded
        generates = llama.generates
    if not generates:
        return await _by_embedding(registry, name, query, documents)
    return await _by_judgement(registry, name, query, documents, options, left)


async def _by_embedding(
    registry: ModelRegistry, name: str, query: str, documents: list[str]
) -> Ranking:
    _, asked, num_query_tokens = await embed_texts(registry, name, [query], "query")
    name, vectors, num_tokens = await embed_texts(registry, name, documents, "documents")
    cosines = vectors @ asked[0]  # unit vectors: the dot product is the cosine
    results = [Ranked(i, float(c), float(c)) for i, c in enumerate(cosines)]
    return Ranking(name, _best_first(results), num_query_tokens + num_tokens)


async def _by_judgement(
    registry: ModelRegistry,
    name: str,
    query: str,
    documents: list[str],
    options: ServingOptions,
    left: Callable[[], Awaitable[None]] | None,
) -> Ranking:
    # Queued in waves of the model's batch size: a wave shares its steps, and a thousand
    # documents never fill the queue other clients' requests wait in.
    runs: list[tuple[LoadedModel, Request, int]] = []
    try:
        for i, document in enumerate(documents):
            run = await _prepare(registry, name, query, document, i, options)
            runs.append(run)
            submit(run[0], run[1])
            wave = run[0].batcher.max_batch_size
            if len(runs) % wave == 0 or i == len(documents) - 1:
                await wait_done(*(r for _, r, _ in runs[-wave:]), left=left)
                _check(runs[-wave:], len(runs) - min(wave, len(runs)))
    except BaseException:
        cancel_all([request for _, request, _ in runs])
        raise
    results = []
    for i, (_, request, yes) in enumerate(runs):
        scores = request.token_scores
        log_odds = _logsumexp(scores[:yes]) - _logsumexp(scores[yes:])
        results.append(Ranked(i, _sigmoid(log_odds), log_odds))
    num_tokens = sum(request.num_prompt_tokens for _, request, _ in runs)
    return Ranking(name, _best_first(results), num_tokens)


def _check(runs: list[tuple[LoadedModel, Request, int]], first: int) -> None:
    """Each request of a wave read its answer's logits, or the reason it did not."""
    for i, (_, request, _) in enumerate(runs, start=first):
        if request.token_scores:
            continue
        if request.finish_reason is FinishReason.TIMEOUT:
            raise ApiError(504, f"documents[{i}]: not scored before the request's timeout")
        if request.finish_reason is FinishReason.CANCELLED:
            raise ApiError(503, f"documents[{i}]: not scored: its request was cancelled")
        status = 503 if request.failure is Failure.UNAVAILABLE else 500
        raise ApiError(status, f"documents[{i}]: not scored: {request.error or 'no logits'}")


async def _prepare(
    registry: ModelRegistry,
    name: str,
    query: str,
    document: str,
    index: int,
    options: ServingOptions,
) -> tuple[LoadedModel, Request, int]:
    """One document's request, under its own lease of the model, and how many of its
    ``score_tokens`` spell yes (the rest spell no)."""
    answers: list[tuple[tuple[int, ...], tuple[int, ...]]] = []

    def prompt(model: LlamaModel) -> Messages:
        answers.append((answer_tokens(model, YES, name), answer_tokens(model, NO, name)))
        return [("user", QUESTION.format(document=document, query=query))]

    try:
        # the answer's first token only, read greedily: nothing to draft
        params = SamplingParams(max_tokens=1, temperature=0.0)
        loaded, request = await prepare(registry, name, prompt, params, options)
    except ApiError as exc:
        if exc.extra.get("code") != "context_length_exceeded":
            raise
        n, n_ctx = exc.extra["n_prompt_tokens"], exc.extra["n_ctx"]
        raise context_overflow(n, n_ctx, name, f"documents[{index}]") from None
    yes, no = answers[-1]
    request.is_speculative = False
    request.score_tokens = yes + no
    return loaded, request, len(yes)


def answer_tokens(model: LlamaModel, spellings: tuple[str, ...], name: str) -> tuple[int, ...]:
    """The token ids that begin an answer spelled one of ``spellings`` as a single token."""
    ids = {tokens[0] for s in spellings if len(tokens := model.tokenize(s, add_special=False)) == 1}
    if not ids:
        raise ApiError(
            400,
            f"model {name!r} cannot rerank: its vocabulary has no single token for "
            f"{spellings[0]!r}; use another model",
        )
    return tuple(sorted(ids))


def _best_first(results: list[Ranked]) -> list[Ranked]:
    return sorted(results, key=lambda r: (-r.score, r.index))


def _logsumexp(values: tuple[float, ...]) -> float:
    top = max(values)
    return top + math.log(sum(math.exp(v - top) for v in values))


def _sigmoid(x: float) -> float:
    return float(1.0 / (1.0 + np.exp(-x)))
