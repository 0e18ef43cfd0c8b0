"""Memory budget, LRU eviction, keep-alive, explicit load/unload: real models, real server.

Three SmolLM2 copies (Q4_1, Q2_K, Q8_0) with small contexts take 130-185 MB
each, so a 400 MB budget holds any two of them and never all three; Gemma 3 at
its shipped 16 x 2048 context (~1.3 GB) never fits.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import orjson
import pytest

from server.launcher import LiveServer
from tests.conftest import (
    REPO,
    health,
    live_server,
    slow_steps,
    wait_for_status,
    wait_until,
    write_config,
)
from tests.deploy.test_cli_client import run_tester

KEY = "memory-test-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
BUDGET_MB = 400
SMALL = {"context_size": 512, "max_batch_size": 2, "batch_tokens": 64}
FILES = {
    "q4": "SmolLM2-135M-Instruct.Q4_1.gguf",
    "q2": "SmolLM2-135M-Instruct.Q2_K.gguf",
    "q8": "SmolLM2-135M-Instruct.Q8_0.gguf",
}
COUNTING = ", ".join(map(str, range(1, 21))) + ","  # every model goes on counting


@pytest.fixture(scope="module")
def memory_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    folder = tmp_path_factory.mktemp("memory")
    # weights as-is: "fastest" would serve q4 as Q8_0, the same size as q8
    models: dict[str, Any] = {
        name: {"path": str(REPO / "models" / file), "weights": "as-is", **SMALL}
        for name, file in FILES.items()
    }
    models["gemma"] = {"path": str(REPO / "models" / "gemma-3-270m-q4_k_m.gguf")}
    models["q4-brief"] = models["q4"] | {"keep_alive": "1s"}
    models["q8-drafted"] = models["q8"] | {"draft": "q2"}  # q2's weights, opened once
    server = {
        "threads": 1,
        "data_dir": str(folder / "data"),
        "default_model": "q4",
        "memory_budget_mb": BUDGET_MB,
        "result_cache": {"enabled": False},
        "drain_timeout_s": 60,
    }
    config = write_config(folder, {"server": server, "models": models})
    # faults enabled (none armed): tests slow the steps so that streams outlast loads
    env = {"EDGE_LLM_API_KEYS": KEY, "EDGE_LLM_FAULTS": ""}
    with live_server(config, name="memory", env=env) as live:
        yield live


@pytest.fixture
async def client(memory_server: LiveServer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=memory_server.url, timeout=120, headers=AUTH) as c:
        await unload_all(c)
        yield c


async def unload_all(client: httpx.AsyncClient) -> None:
    """Generators and embedding contexts: each test starts with nothing in memory."""
    body = await health(client)
    embedding = [n for n, m in body["models"].items() if "embedding_context_bytes" in m]
    for name in set(body["loaded_models"]) | set(embedding):
        reply = await client.post(f"/models/{name}/unload")
        assert reply.status_code == 200 and reply.json()["was_loaded"], reply.text
    await wait_until(
        lambda: health(client), lambda h: h["memory"]["used_bytes"] == 0, 30, "all unloaded"
    )


async def generate(client: httpx.AsyncClient, model: str, **extra: Any) -> httpx.Response:
    body = {"prompt": "Say hi.", "model_name": model, "max_tokens": 4, "temperature": 0}
    return await client.post("/generate", json=body | extra)


async def loaded(client: httpx.AsyncClient) -> set[str]:
    """Models in memory, including those whose unload has not finished."""
    body = await health(client)
    return set(body["loaded_models"]) | set(body["unloading_models"])


async def stream(client: httpx.AsyncClient, model: str, started: asyncio.Event) -> str:
    """A long greedy raw-text stream; returns its finish reason, after checking every frame."""
    body = {"prompt": COUNTING, "model": model, "max_tokens": 300, "temperature": 0}
    finish: str | None = None
    num_chunks = 0
    async with client.stream("POST", "/v1/completions", json=body | {"stream": True}) as reply:
        assert reply.status_code == 200
        async for line in reply.aiter_lines():
            if line.startswith("data: {"):
                chunk = orjson.loads(line[6:])
                assert "error" not in chunk, chunk
                finish = chunk["choices"][0]["finish_reason"] or finish
                num_chunks += 1
                started.set()
    assert finish in ("stop", "length") and num_chunks > 10, (finish, num_chunks)
    return str(finish)


async def test_third_model_evicts_the_least_recently_used_idle_one(
    client: httpx.AsyncClient,
) -> None:
    for name in ("q4", "q2"):
        assert (await generate(client, name)).status_code == 200
    assert await loaded(client) == {"q4", "q2"}
    before = (await health(client))["memory"]
    assert (await generate(client, "q8")).status_code == 200
    after = await health(client)
    assert set(after["loaded_models"]) == {"q2", "q8"}  # q4 was used longest ago
    assert after["memory"]["used_bytes"] <= after["memory"]["budget_bytes"]
    assert after["memory"]["used_bytes"] != before["used_bytes"]
    # q4 back: q2 is now the least recently used
    assert (await generate(client, "q4")).status_code == 200
    assert await loaded(client) == {"q8", "q4"}
    metrics = (await client.get("/metrics")).text
    assert 'edge_llm_model_unloads_total{model="q4",reason="evicted"}' in metrics
    assert 'edge_llm_model_memory_bytes{kind="kv",model="q4"}' in metrics


async def test_a_busy_model_is_never_evicted(client: httpx.AsyncClient) -> None:
    assert (await generate(client, "q2")).status_code == 200  # q2 is now least recent
    started = asyncio.Event()
    async with slow_steps(client, 0.1):  # the stream takes 30 s or more, on any machine
        streaming = asyncio.ensure_future(stream(client, "q4", started))
        await asyncio.wait_for(started.wait(), 60)
        for name in ("q8", "q2", "q8"):  # each needs room: the idle other one goes
            assert (await generate(client, name)).status_code == 200
            assert not streaming.done(), "the stream ended too soon to prove anything"
            assert await loaded(client) == {"q4", name}
    await streaming


async def test_requests_wait_for_room_until_their_deadline(client: httpx.AsyncClient) -> None:
    started = {"q4": asyncio.Event(), "q2": asyncio.Event()}
    async with slow_steps(client, 0.1):  # the streams take 30 s or more, on any machine
        streams = [asyncio.ensure_future(stream(client, m, e)) for m, e in started.items()]
        await asyncio.wait_for(asyncio.gather(*(e.wait() for e in started.values())), 60)
        t0 = time.monotonic()
        refused = await generate(client, "q8", timeout=1.5)
        waited = time.monotonic() - t0
        assert refused.status_code == 503, refused.text
        assert "Retry-After" in refused.headers
        assert "memory budget" in refused.json()["error"]["message"]
        assert 1.4 <= waited < 15  # its deadline, not the end of a stream (30 s)
        assert not any(s.done() for s in streams), "the streams ended before the deadline"
    # without a short deadline the request waits for a stream to end, then loads
    assert (await generate(client, "q8")).status_code == 200
    await asyncio.gather(*streams)


async def test_a_model_that_can_never_fit_is_refused_at_once(client: httpx.AsyncClient) -> None:
    t0 = time.monotonic()
    reply = await generate(client, "gemma")
    assert reply.status_code == 503
    assert time.monotonic() - t0 < 20  # no waiting for a room that cannot come
    message = reply.json()["error"]["message"]
    assert f"the memory budget is {BUDGET_MB} MB" in message and "needs about" in message
    needs_mb = int(message.split("needs about ")[1].split(" MB")[0])
    assert needs_mb > BUDGET_MB


async def test_keep_alive_zero_unloads_after_the_request_and_rss_falls(
    client: httpx.AsyncClient,
) -> None:
    load = await client.post("/models/q8/load")
    assert load.status_code == 200
    footprint = load.json()["memory"]
    body = await health(client)
    rss_loaded = body["memory"]["rss_bytes"]
    # kv_release (the default): the cache's pages went back at load, nothing is cached yet
    kv_resident = body["models"]["q8"]["memory"]["kv_resident_bytes"]
    assert kv_resident is not None and kv_resident < 0.1 * footprint["kv_bytes"]
    assert (await generate(client, "q8", keep_alive=0)).status_code == 200
    await wait_until(lambda: loaded(client), lambda names: "q8" not in names, 10, "q8 unloaded")
    rss_after = (await health(client))["memory"]["rss_bytes"]
    # the weights (mapped, read at load) were resident
    expected_drop = 0.5 * footprint["weights_bytes"]
    assert rss_loaded - rss_after >= expected_drop, (rss_loaded, rss_after, footprint)


async def test_keep_alive_durations_from_requests(client: httpx.AsyncClient) -> None:
    assert (await generate(client, "q2", keep_alive=-1)).status_code == 200
    assert (await generate(client, "q4", keep_alive="2s")).status_code == 200
    cards = {c["id"]: c for c in (await client.get("/v1/models")).json()["data"]}
    assert cards["q4"]["loaded"] and cards["q4"]["expires_at"] <= time.time() + 2.5
    assert cards["q2"]["loaded"] and cards["q2"]["expires_at"] is None  # pinned
    assert cards["q2"]["memory_bytes"] > 0 and cards["q8"]["memory_bytes"] is None
    await wait_until(lambda: loaded(client), lambda names: names == {"q2"}, 10, "q4 expired")
    await asyncio.sleep(1.0)
    assert await loaded(client) == {"q2"}
    # a pinned model is not evicted for others: q4 and q8 take turns beside it
    for name in ("q4", "q8"):
        assert (await generate(client, name)).status_code == 200
        assert await loaded(client) == {"q2", name}


async def test_keep_alive_from_send_text_and_the_v1_routes(client: httpx.AsyncClient) -> None:
    """docs/memory-and-lifecycle.md: per request on /generate, /send_text and the /v1 routes."""
    hi = {"max_tokens": 4, "temperature": 0}
    task = await client.post(
        "/send_text", json={"prompt": "Say hi.", "model_name": "q4", "keep_alive": "2s"} | hi
    )
    assert task.status_code == 202, task.text
    await wait_for_status(client, task.json()["task_id"], "done")
    assert 0 < (await cards(client))["q4"]["expires_at"] - time.time() <= 2.5
    await wait_until(lambda: loaded(client), lambda names: "q4" not in names, 10, "q4 expired")
    chat = {"model": "q2", "messages": [{"role": "user", "content": "hi"}], "keep_alive": -1}
    reply = await client.post("/v1/chat/completions", json=chat | hi)
    assert reply.status_code == 200, reply.text
    assert (await cards(client))["q2"]["expires_at"] is None  # pinned
    text = {"model": "q8", "prompt": "Say hi.", "keep_alive": 0}
    reply = await client.post("/v1/completions", json=text | hi)
    assert reply.status_code == 200, reply.text
    await wait_until(lambda: loaded(client), lambda names: names == {"q2"}, 10, "q8 unloaded")


async def cards(client: httpx.AsyncClient) -> dict[str, Any]:
    return {c["id"]: c for c in (await client.get("/v1/models")).json()["data"]}


async def test_bad_keep_alive_is_a_400_naming_the_field(client: httpx.AsyncClient) -> None:
    reply = await generate(client, "q4", keep_alive="5 minutes")
    assert reply.status_code == 400 and "keep_alive" in reply.json()["error"]["message"]
    chat = {"model": "q4", "messages": [{"role": "user", "content": "hi"}], "keep_alive": "x"}
    reply = await client.post("/v1/chat/completions", json=chat)
    assert reply.status_code == 400 and "keep_alive" in reply.json()["error"]["message"]


async def test_unload_drains_a_busy_model_first(client: httpx.AsyncClient) -> None:
    started = asyncio.Event()
    async with slow_steps(client):  # 300 steps: the stream has 15 s or more to go
        streaming = asyncio.ensure_future(stream(client, "q4", started))
        await asyncio.wait_for(started.wait(), 60)
        reply = await client.post("/models/q4/unload")
        assert reply.status_code == 200 and reply.json()["was_loaded"]
        # it had finished when the unload answered: its last frames (on another
        # connection) arrive at once, not after the many slowed steps it had left (the
        # steps stay slow until then, so a fast machine cannot finish them in time)
        assert await asyncio.wait_for(streaming, 5) in ("stop", "length")
    assert "q4" not in await loaded(client)


async def test_load_and_unload_need_the_api_key(memory_server: LiveServer) -> None:
    async with httpx.AsyncClient(base_url=memory_server.url, timeout=60) as anonymous:
        for action in ("load", "unload"):
            assert (await anonymous.post(f"/models/q4/{action}")).status_code == 401


def test_cli_loads_and_unloads(memory_server: LiveServer) -> None:
    url = memory_server.url
    out = run_tester(url, "--api-key", KEY, "load", "--model", "q2", "--keep-alive", "-1")
    assert out.returncode == 0, out.stderr
    assert orjson.loads(out.stdout)["keep_alive_s"] is None
    out = run_tester(url, "--api-key", KEY, "unload", "--model", "q2")
    assert out.returncode == 0, out.stderr
    assert orjson.loads(out.stdout) == {"model": "q2", "loaded": False, "was_loaded": True}
    refused = run_tester(url, "unload", "--model", "q2")
    assert refused.returncode == 1 and "API key" in refused.stderr


async def test_a_served_model_that_is_also_a_draft_is_opened_once(
    client: httpx.AsyncClient,
) -> None:
    assert (await generate(client, "q2")).status_code == 200
    assert (await generate(client, "q8-drafted")).status_code == 200
    body = await health(client)
    # apart, q2 (~160 MB) and q8 drafted by q2 (~350 MB) exceed the 400 MB budget;
    # sharing q2's weights, they fit side by side
    assert set(body["loaded_models"]) == {"q2", "q8-drafted"}
    q2, drafted = (body["models"][n]["memory"] for n in ("q2", "q8-drafted"))
    assert q2["total_bytes"] + drafted["total_bytes"] > BUDGET_MB << 20
    shared = q2["weights_bytes"]
    assert body["memory"]["used_bytes"] == q2["total_bytes"] + drafted["total_bytes"] - shared


async def embed(client: httpx.AsyncClient, model: str) -> None:
    body = {"model": model, "input": "The cat sat on the mat."}
    reply = await client.post("/v1/embeddings", json=body)
    assert reply.status_code == 200, reply.text


async def test_an_embedding_context_counts_in_the_budget_and_expires(
    client: httpx.AsyncClient,
) -> None:
    """Its context (and the weights, when no generator holds the file) count as used; the
    file is counted once with the generator's; it closes once idle past its keep-alive."""
    assert (await health(client))["memory"]["used_bytes"] == 0
    await embed(client, "q4")
    body = await health(client)
    context = body["models"]["q4"]["embedding_context_bytes"]
    assert context > 0 and not body["loaded_models"]
    alone = body["memory"]["used_bytes"]
    assert alone > context  # the weights too: no generator holds the file
    load = await client.post("/models/q4/load")
    assert load.status_code == 200
    generator = load.json()["memory"]["total_bytes"]
    assert (await health(client))["memory"]["used_bytes"] == generator + context
    # a model whose keep-alive is 1 s: its embedding context closes on its own
    await embed(client, "q4-brief")
    assert "embedding_context_bytes" in (await health(client))["models"]["q4-brief"]
    body = await wait_until(
        lambda: health(client),
        lambda h: "embedding_context_bytes" not in h["models"]["q4-brief"],
        10,
        "the idle embedding context closed",
    )
    assert body["memory"]["used_bytes"] == generator + context
    # an unload closes the model's embedding context too
    assert (await client.post("/models/q4/unload")).json()["was_loaded"]
    await wait_until(
        lambda: health(client), lambda h: h["memory"]["used_bytes"] == 0, 30, "all unloaded"
    )
    assert "embedding_context_bytes" not in (await health(client))["models"]["q4"]
