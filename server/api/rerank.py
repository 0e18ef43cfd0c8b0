"""``POST /v1/rerank`` (and ``/rerank``, ``/v2/rerank``, llama-server's aliases): documents
ranked by relevance to a query, in the shapes rerank clients send.

- **Jina, Cohere and llama-server** send ``documents`` (strings, or Jina's and
  Cohere's ``{"text": ...}`` objects) and read ``results`` of ``index`` and
  ``relevance_score``, most relevant first, with ``document.text`` where
  ``return_documents`` asks for it.
- **Hugging Face TEI** sends ``texts`` and reads a bare list of ``index`` and
  ``score`` (``text`` with ``return_text``; ``raw_scores`` the log-odds).

How the scores are made: ``server.serving.rerank``.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request as HttpRequest
from starlette.responses import Response

from server.api.fields import MAX_PROMPT_CHARS, ServingFields
from server.api.http import client_left, json_response, read_body, registry_of
from server.schema import spec
from server.serving.rerank import Ranked, rerank

MAX_DOCUMENTS = 1000  # Cohere's limit per request


@dataclass(slots=True, frozen=True, kw_only=True)
class RerankBody(ServingFields):
    """POST /v1/rerank"""

    query: str = spec(doc="what the documents are ranked against", min_length=1)
    documents: list[object] | None = spec(
        None,
        doc=f"the texts to rank (1 to {MAX_DOCUMENTS}): strings, or Jina's and Cohere's "
        '{"text": ...} objects; or send them as TEI\'s texts',
    )
    texts: list[object] | None = spec(
        None, doc="TEI's name for documents: the reply is then TEI's bare list"
    )
    model: str | None = spec(None, doc="a configured model name; the default when omitted")
    top_n: int | None = spec(
        None, doc="return only the n most relevant (all when omitted or larger)", ge=0
    )
    return_documents: bool = spec(
        False, doc="each result carries its document as document.text (Jina, Cohere)"
    )
    return_text: bool = spec(False, doc="TEI: each result carries its text")
    raw_scores: bool = spec(
        False,
        doc="TEI: score is the raw score (the log-odds of yes over no; a cosine from an "
        "embedding model) instead of the relevance 0-1",
    )
    truncate: bool = spec(
        False,
        doc="TEI: refused when true (a document longer than the context is a 400 naming it)",
    )
    truncation_direction: str = spec(
        "Right", doc="TEI: accepted (nothing is truncated)", choices=("Left", "Right")
    )
    max_chunks_per_doc: int | None = spec(
        None, doc="Cohere v1: accepted (documents are not split into chunks)", ge=1
    )
    max_tokens_per_doc: int | None = spec(
        None,
        doc="Cohere v2: refused (documents are not cut; a document longer than the context "
        "is a 400 naming it)",
        ge=1,
    )
    rank_fields: list[str] | None = spec(
        None, doc="Cohere v1: refused (documents are texts, not structured objects)"
    )
    user: str | None = spec(None, doc="end-user id (recorded nowhere)")

    def __post_init__(self) -> None:
        if (self.documents is None) == (self.texts is None):
            raise ValueError("send the documents to rank as documents (or TEI's texts), once")
        if self.truncate:
            raise ValueError(
                "truncate: documents are not cut here; shorten any longer than the context "
                "(its 400 names it)"
            )
        if self.max_tokens_per_doc is not None:  # cutting would change the scores
            raise ValueError("max_tokens_per_doc: documents are not cut here; remove the field")
        if self.rank_fields is not None:
            raise ValueError("rank_fields: documents are texts here; send each as a string")
        self.document_texts  # noqa: B018 (checks each document)

    @property
    def is_tei(self) -> bool:
        return self.texts is not None

    @property
    def document_texts(self) -> list[str]:
        field = "texts" if self.is_tei else "documents"
        items = self.texts if self.is_tei else self.documents
        if not isinstance(items, list) or not 1 <= len(items) <= MAX_DOCUMENTS:
            raise ValueError(f"{field}: send 1 to {MAX_DOCUMENTS} documents as a list of texts")
        return [_text(item, f"{field}[{i}]") for i, item in enumerate(items)]


def _text(item: object, where: str) -> str:
    if isinstance(item, dict) and set(item) == {"text"}:  # Jina's and Cohere's objects
        item = item["text"]
        where += ".text"
    if not isinstance(item, str):
        raise ValueError(f'{where}: expected a text (or {{"text": ...}}), got {item!r:.40}')
    if len(item) > MAX_PROMPT_CHARS:
        raise ValueError(f"{where}: at most {MAX_PROMPT_CHARS} characters")
    return item


async def create_rerank(http: HttpRequest) -> Response:
    body = await read_body(http, RerankBody)
    texts = body.document_texts
    ranking = await rerank(
        registry_of(http), body.model, body.query, texts, body, left=client_left(http)
    )
    results = ranking.results[: body.top_n]  # None: all
    if body.is_tei:
        return json_response([_tei(r, body, texts) for r in results])
    usage = {"prompt_tokens": ranking.num_tokens, "total_tokens": ranking.num_tokens}
    return json_response(
        {
            "id": f"rerank-{uuid.uuid4().hex}",  # Cohere's clients read one
            "object": "list",
            "model": ranking.model,
            "usage": usage,
            "results": [_result(r, body, texts) for r in results],
        }
    )


def _result(ranked: Ranked, body: RerankBody, texts: list[str]) -> dict[str, Any]:
    result: dict[str, Any] = {"index": ranked.index, "relevance_score": ranked.score}
    if body.return_documents:
        result["document"] = {"text": texts[ranked.index]}
    return result


def _tei(ranked: Ranked, body: RerankBody, texts: list[str]) -> dict[str, Any]:
    result: dict[str, Any] = {
        "index": ranked.index,
        "score": ranked.raw if body.raw_scores else ranked.score,
    }
    if body.return_text:
        result["text"] = texts[ranked.index]
    return result
