"""Rerank on the live server (server/api/rerank.py, server/serving/rerank.py): documents
ranked by relevance to a query, by the embedding model (cosine) and by a generating model
(its yes/no judgement read from the logits), in Jina's, Cohere's, llama-server's and
TEI's shapes, with Cohere's official clients."""

from __future__ import annotations

import math
from typing import Any

import cohere
import httpx
import pytest

EMBEDDER = "all-minilm-l6-v2"
CODER = "qwen2.5-coder-0.5b"

# llama.cpp's own rerank test set (tools/server/tests/unit/test_rerank.py)
MACHINES = [
    "A machine is a physical system that uses power to apply forces and control movement "
    "to perform an action. The term is commonly applied to artificial devices, such as "
    "those employing engines or motors, but also to natural biological macromolecules, "
    "such as molecular machines.",
    "Learning is the process of acquiring new understanding, knowledge, behaviors, skills, "
    "values, attitudes, and preferences. The ability to learn is possessed by humans, "
    "non-human animals, and some machines; there is also evidence for some kind of "
    "learning in certain plants.",
    "Machine learning is a field of study in artificial intelligence concerned with the "
    "development and study of statistical algorithms that can learn from data and "
    "generalize to unseen data, and thus perform tasks without explicit instructions.",
    "Paris, capitale de la France, est une grande ville européenne et un centre mondial de "
    "l'art, de la mode, de la gastronomie et de la culture. Son paysage urbain du XIXe "
    "siècle est traversé par de larges boulevards et la Seine.",
]
# (query, documents, the relevant one): on each, the coder's relevant document leads the
# runner-up by 0.2 or more in log-odds (2026-12-07), several times what batching moves
RETRIEVAL: list[tuple[str, list[str], int]] = [
    (
        "What is the capital of France?",
        [
            "Berlin is the capital and largest city of Germany.",
            "Paris is the capital and most populous city of France.",
            "The Eiffel Tower was built for the 1889 World's Fair.",
            "Python is a programming language.",
        ],
        1,
    ),
    (
        "How do I sort a list in Python?",
        [
            "Use the sorted() function or the list.sort() method to sort a list in Python.",
            "Rust's Vec has a sort method.",
            "A list of the tallest buildings in the world.",
            "Python snakes live in Africa and Asia.",
        ],
        0,
    ),
    ("Machine learning is", MACHINES, 2),
]


async def rerank(client: httpx.AsyncClient, **body: Any) -> Any:
    reply = await client.post("/v1/rerank", json=body)
    assert reply.status_code == 200, reply.text
    assert "x-ignored-fields" not in reply.headers
    return reply.json()


def check_ranking(reply: dict[str, Any], num_documents: int) -> list[float]:
    results = reply["results"]
    assert sorted(r["index"] for r in results) == list(range(num_documents))
    scores = [r["relevance_score"] for r in results]
    assert scores == sorted(scores, reverse=True)
    assert reply["usage"]["prompt_tokens"] == reply["usage"]["total_tokens"] > num_documents
    return scores


@pytest.mark.parametrize("query,documents,relevant", RETRIEVAL)
async def test_the_embedding_model_ranks_the_relevant_document_first(
    client: httpx.AsyncClient, query: str, documents: list[str], relevant: int
) -> None:
    reply = await rerank(client, model=EMBEDDER, query=query, documents=documents)
    scores = check_ranking(reply, len(documents))
    assert reply["results"][0]["index"] == relevant
    assert reply["model"] == EMBEDDER
    assert all(-1 <= s <= 1 for s in scores)  # cosines


async def test_the_coder_model_judges_the_relevant_document_first(
    client: httpx.AsyncClient,
) -> None:
    for query, documents, relevant in RETRIEVAL:
        # computed whole: on this Q4_K_M file a prompt continued from the prefix cache
        # moves logprobs by up to 0.3 nat (test_qwen_coder), batching by up to 0.055
        reply = await rerank(
            client, model=CODER, query=query, documents=documents, cache_prompt=False
        )
        scores = check_ranking(reply, len(documents))
        assert reply["results"][0]["index"] == relevant, (query, reply["results"])
        assert all(0 < s < 1 for s in scores)  # P(yes) among yes and no


async def test_scores_are_the_chat_routes_logprobs_of_yes_and_no(
    client: httpx.AsyncClient,
) -> None:
    """The engine's token_scores against /v1/chat/completions' top logprobs of the same
    prompt's first token: the log-odds of yes over no agree."""
    query, documents, _ = RETRIEVAL[0]
    question = (
        f"Document: {documents[1]}\n\nQuery: {query}\n\n"
        "Is the document relevant to the query? Answer yes or no."
    )
    body = {
        "model": CODER,
        "messages": [{"role": "user", "content": question}],
        "max_tokens": 1,
        "temperature": 0,
        "logprobs": True,
        "top_logprobs": 20,
        "cache_prompt": False,  # both computed whole (see the test above)
    }
    reply = await client.post("/v1/chat/completions", json=body)
    assert reply.status_code == 200, reply.text
    top = reply.json()["choices"][0]["logprobs"]["content"][0]["top_logprobs"]
    yes = [t["logprob"] for t in top if t["token"].strip().lower() == "yes"]
    no = [t["logprob"] for t in top if t["token"].strip().lower() == "no"]
    assert yes and no, top
    log_odds = math.log(sum(map(math.exp, yes))) - math.log(sum(map(math.exp, no)))
    tei = await client.post(
        "/rerank",
        json={
            "model": CODER,
            "query": query,
            "texts": [documents[1]],
            "raw_scores": True,
            "cache_prompt": False,
        },
    )
    assert tei.status_code == 200, tei.text
    assert tei.json()[0]["score"] == pytest.approx(log_odds, abs=0.01)


async def test_tei_shape(client: httpx.AsyncClient) -> None:
    body = {"model": EMBEDDER, "query": "Machine learning is", "texts": MACHINES}
    reply = await client.post("/rerank", json=body | {"return_text": True})
    assert reply.status_code == 200, reply.text
    results = reply.json()
    assert [set(r) for r in results] == [{"index", "score", "text"}] * len(MACHINES)
    assert results[0]["index"] == 2 and results[-1]["index"] == 3
    assert all(r["text"] == MACHINES[r["index"]] for r in results)
    reply = await client.post("/rerank", json=body | {"top_n": 2})
    assert [r["index"] for r in reply.json()] == [r["index"] for r in results[:2]]


async def test_top_n_and_return_documents(client: httpx.AsyncClient) -> None:
    body: dict[str, Any] = {"model": EMBEDDER, "query": "Machine learning is"}
    whole = await rerank(client, **body, documents=MACHINES)
    assert all("document" not in r for r in whole["results"])
    for top_n, expected in ((2, 2), (4, 4), (99, 4), (0, 0)):
        reply = await rerank(client, **body, documents=MACHINES, top_n=top_n)
        assert reply["results"] == whole["results"][:expected]
    objects = [{"text": d} for d in MACHINES]  # Jina's and Cohere's document objects
    reply = await rerank(client, **body, documents=objects, return_documents=True)
    assert [r["index"] for r in reply["results"]] == [r["index"] for r in whole["results"]]
    assert all(r["document"] == {"text": MACHINES[r["index"]]} for r in reply["results"])


async def test_cohere_clients(server: str) -> None:
    query, documents, relevant = RETRIEVAL[0]
    async with httpx.AsyncClient(timeout=120) as http:  # closed here, not by the clients
        v2 = cohere.AsyncClientV2(base_url=server, api_key="unused", httpx_client=http)
        reply = await v2.rerank(model=EMBEDDER, query=query, documents=documents, top_n=2)
        assert len(reply.results) == 2 and reply.results[0].index == relevant
        v1 = cohere.AsyncClient(base_url=server, api_key="unused", httpx_client=http)
        objects: list[Any] = [{"text": d} for d in documents]
        old = await v1.rerank(model=EMBEDDER, query=query, documents=objects, return_documents=True)
    assert old.results[0].index == relevant
    assert old.results[0].document is not None
    assert old.results[0].document.text == documents[relevant]


@pytest.mark.parametrize(
    "body,words",
    [
        ({"documents": []}, "documents: send 1 to 1000"),
        ({"documents": None}, "documents (or TEI's texts)"),
        ({"documents": 123}, "documents"),
        ({"documents": [1, 2, 3]}, "documents[0]: expected a text"),
        ({"documents": ["a"], "texts": ["b"]}, "once"),
        ({"documents": ["a"], "query": ""}, "query"),
        ({"documents": ["a"], "max_tokens_per_doc": 10}, "max_tokens_per_doc"),
        ({"texts": ["a"], "truncate": True}, "truncate"),
    ],
)
async def test_bad_requests_are_400s_naming_the_field(
    client: httpx.AsyncClient, body: dict[str, Any], words: str
) -> None:
    reply = await client.post("/v1/rerank", json={"query": "Machine learning is"} | body)
    assert reply.status_code == 400, reply.text
    assert words in reply.json()["error"]["message"]


@pytest.mark.parametrize("model,words", [(CODER, 5000), (EMBEDDER, 600)])
async def test_a_document_longer_than_the_context_is_named(
    client: httpx.AsyncClient, model: str, words: int
) -> None:
    documents = ["Paris is in France.", "word " * words]
    body = {"model": model, "query": "Where is Paris?", "documents": documents}
    reply = await client.post("/v1/rerank", json=body)
    assert reply.status_code == 400, reply.text
    error = reply.json()["error"]
    assert error["code"] == "context_length_exceeded"
    assert "documents[1]" in error["message"]
