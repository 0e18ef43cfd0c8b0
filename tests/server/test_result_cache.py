"""The exact-match result cache and request priorities, on a server of their own.

The shared test server keeps the result cache off (other tests compare repeated
requests, which must really be decoded); this one has it on, and a single
sequence slot so that requests queue.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import SPECULATIVE_MODELS, config_variant, running_server

GREEDY = {"prompt": "Name a colour.", "temperature": 0, "max_tokens": 8}
VARYING = ("id", "timings")  # differ between a decode and its replay


@pytest.fixture(scope="module")
def server(test_config: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """This module's own server (conftest's ``client`` talks to it)."""
    folder = tmp_path_factory.mktemp("result-cache")
    settings = {"enabled": True, "max_entries": 64, "max_mb": 1, "ttl_s": 600}
    config = config_variant(test_config, folder, result_cache=settings, max_batch_size=1)
    with running_server(config, name="result-cache-server") as url:
        yield url


async def post(client: httpx.AsyncClient, body: dict[str, Any], **kw: Any) -> httpx.Response:
    reply = await client.post("/generate", json=body, **kw)
    assert reply.status_code == 200, reply.text
    return reply


def stable(reply: httpx.Response) -> dict[str, Any]:
    return {k: v for k, v in reply.json().items() if k not in VARYING}


async def test_a_repeated_greedy_request_is_a_hit(client: httpx.AsyncClient) -> None:
    body = {**GREEDY, "prompt": "Name a colour of the sea."}
    first, second = await post(client, body), await post(client, body)
    assert (first.headers["x-cache"], second.headers["x-cache"]) == ("MISS", "HIT")
    assert stable(second) == stable(first) | {"usage": second.json()["usage"]}
    assert second.json()["text"] == first.json()["text"] and first.json()["text"]
    assert second.json()["usage"]["completion_tokens"] == first.json()["usage"]["completion_tokens"]


SAMPLED = {"temperature": 0.8, "seed": 3}


@pytest.mark.parametrize(
    ("base", "change"),
    [
        ({}, {"max_tokens": 9}),
        ({}, {"stop": None}),  # a stop string taken from the cached text (see below)
        ({}, {"temperature": 0.5, "seed": 3}),
        (SAMPLED, {"seed": 4}),
        (SAMPLED, {"temperature": 0.5}),
        (SAMPLED, {"top_k": 5}),
        (SAMPLED, {"top_p": 0.5}),
        ({}, {"prompt": "Name a fruit."}),
    ],
)
async def test_any_output_changing_parameter_misses(
    client: httpx.AsyncClient, base: dict[str, Any], change: dict[str, Any]
) -> None:
    # a prompt no other request of this run sent: a HIT can only come from this test
    counting = {**GREEDY, "prompt": f"Count from one to fifty. ({uuid.uuid4().hex[:8]})"}
    body = counting | base
    cached = await post(client, body)
    assert cached.headers["x-cache"] == "MISS"
    assert (await post(client, body)).headers["x-cache"] == "HIT"
    text = cached.json()["text"]
    if "stop" in change:  # a string the cached reply holds: the changed one ends before it
        stop = text[len(text) // 2 :][:2]
        assert stop.strip(), text
        change = {"stop": [stop]}
    reply = await post(client, body | change)
    assert reply.headers["x-cache"] == "MISS", (body, change)
    # where the change must show in the output, it does (not a replay under another name)
    if "max_tokens" in change:
        assert cached.json()["finish_reason"] == "length", cached.json()
        assert reply.json()["usage"]["completion_tokens"] == change["max_tokens"]
    if "stop" in change:
        assert reply.json()["text"] == text[: text.index(change["stop"][0])]
    if "prompt" in change:
        assert reply.json()["usage"]["prompt_tokens"] != cached.json()["usage"]["prompt_tokens"]
    again = await post(client, body | change)
    assert again.headers["x-cache"] == "HIT"  # and the changed request caches under its own key
    assert stable(again) == stable(reply) | {"usage": again.json()["usage"]}
    first = await post(client, body)
    assert first.headers["x-cache"] == "HIT" and first.json()["text"] == text


async def test_a_hit_names_the_stop_word_that_ended_it(client: httpx.AsyncClient) -> None:
    body = {"prompt": "Count: 1, 2, 3,", "n_predict": 16, "temperature": 0, "stop": [","]}
    replies = [await client.post("/completion", json=body) for _ in range(2)]
    assert [r.headers["x-cache"] for r in replies] == ["MISS", "HIT"]
    for reply in replies:
        assert (reply.json()["stop_type"], reply.json()["stopping_word"]) == ("word", ",")


async def test_unseeded_sampling_is_never_cached(client: httpx.AsyncClient) -> None:
    body = {**GREEDY, "temperature": 0.9}
    verdicts = [(await post(client, body)).headers["x-cache"] for _ in range(2)]
    assert verdicts == ["BYPASS", "BYPASS"]


async def test_opting_out_bypasses(client: httpx.AsyncClient) -> None:
    await post(client, GREEDY)
    assert (await post(client, {**GREEDY, "cache": False})).headers["x-cache"] == "BYPASS"
    no_store = await post(client, GREEDY, headers={"Cache-Control": "no-store"})
    assert no_store.headers["x-cache"] == "BYPASS"


async def test_speculation_does_not_change_the_key(client: httpx.AsyncClient) -> None:
    body = {**GREEDY, "model_name": SPECULATIVE_MODELS[0], "prompt": "Count to three."}
    plain = await post(client, {**body, "speculative": False})
    spec = await post(client, body)
    assert spec.headers["x-cache"] == "HIT" and spec.json()["text"] == plain.json()["text"]


async def test_a_streamed_hit_replays_as_a_stream(client: httpx.AsyncClient) -> None:
    body = {**GREEDY, "prompt": "Name a bird.", "stream": True}

    async def stream() -> tuple[str, str]:
        async with client.stream("POST", "/generate", json=body) as reply:
            frames = [line async for line in reply.aiter_lines() if line.startswith("data: ")]
            verdict = reply.headers["x-cache"]
        assert frames[-1] == "data: [DONE]"
        text = "".join(httpx.Response(200, content=f[6:]).json()["text"] for f in frames[:-1])
        return verdict, text

    first, second = await stream(), await stream()
    assert (first[0], second[0]) == ("MISS", "HIT") and first[1] == second[1] and first[1]
    metrics = (await client.get("/metrics")).text
    assert 'edge_llm_result_cache_requests_total{result="HIT"}' in metrics


async def test_higher_priority_is_admitted_first(client: httpx.AsyncClient) -> None:
    hog = asyncio.create_task(
        client.post("/generate", json={**GREEDY, "max_tokens": 2000, "cache": False, "timeout": 60})
    )
    await until(client, lambda h: h["running"] == 1)
    order: list[int] = []

    async def one(priority: int, i: int) -> None:
        body = {**GREEDY, "prompt": f"Say {i}.", "max_tokens": 1, "priority": priority}
        await post(client, body)
        order.append(priority)

    low = [asyncio.create_task(one(0, i)) for i in range(10)]
    await until(client, lambda h: h["waiting"] == 10)
    high = asyncio.create_task(one(10, 99))
    await until(client, lambda h: h["waiting"] == 11)
    hog.cancel()  # the slot frees: the waiting requests run one at a time
    await asyncio.gather(high, *low)
    assert order[0] == 10, order


async def until(client: httpx.AsyncClient, condition: Any, within: float = 60.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not condition((await client.get("/health_check")).json()):
        assert loop.time() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


async def test_a_grammar_is_part_of_the_key(client: httpx.AsyncClient) -> None:
    body = {**GREEDY, "prompt": "Name a colour of the night sky."}
    await post(client, body)
    constrained = {**body, "grammar": 'root ::= "colour: " ("red" | "black")'}
    first, again = await post(client, constrained), await post(client, constrained)
    assert (first.headers["x-cache"], again.headers["x-cache"]) == ("MISS", "HIT")
    assert first.json()["text"] in ("colour: red", "colour: black")


async def test_logprobs_bypass(client: httpx.AsyncClient) -> None:
    body = {"prompt": "Name a colour.", "temperature": 0, "max_tokens": 4, "logprobs": 2}
    for _ in range(2):
        reply = await client.post("/v1/completions", json=body)
        assert reply.status_code == 200 and reply.headers["x-cache"] == "BYPASS", reply.text
        assert len(reply.json()["choices"][0]["logprobs"]["tokens"]) == 4
