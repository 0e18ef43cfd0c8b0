"""Live reload of config.json while streams run: real models, real server."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from server.launcher import LiveServer
from tests.conftest import (
    REPO,
    arm_fault,
    armed_faults,
    health,
    live_server,
    slow_steps,
    wait_until,
    write_config,
)
from tests.models.test_memory import FILES, SMALL, stream, unload_all


def models(*names: str, **changes: Any) -> dict[str, Any]:
    return {n: {"path": str(REPO / "models" / FILES[n]), **SMALL, **changes} for n in names}


def config(folder: Path, models: dict[str, Any]) -> dict[str, Any]:
    server = {"threads": 1, "data_dir": str(folder / "data"), "default_model": "q4"}
    return {"server": server | {"result_cache": {"enabled": False}}, "models": models}


def rewrite(path: Path, body: bytes) -> None:
    """Replace the file at once (as editors do), so the server never reads half of it."""
    part = path.with_suffix(".part")
    part.write_bytes(body)
    os.replace(part, path)


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("reload")


@pytest.fixture(scope="module")
def reload_server(folder: Path) -> Iterator[LiveServer]:
    path = write_config(folder, config(folder, models("q4", "q2")))
    # faults enabled (none armed): one test slows the making of an embedding context
    with live_server(path, name="reload", env={"EDGE_LLM_FAULTS": ""}) as live:
        yield live


@pytest.fixture
async def client(reload_server: LiveServer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=reload_server.url, timeout=120) as c:
        yield c


async def reloads(client: httpx.AsyncClient) -> int:
    count: int = (await health(client))["config"]["reloads"]
    return count


async def generate(client: httpx.AsyncClient, model: str) -> httpx.Response:
    body = {"prompt": "Say hi.", "model_name": model, "max_tokens": 4, "temperature": 0}
    return await client.post("/generate", json=body)


async def test_edit_while_streams_run(client: httpx.AsyncClient, folder: Path) -> None:
    path = folder / "config.json"
    rewrite(path, orjson.dumps(config(folder, models("q4", "q2"))))  # a known start
    # another test of this module may have left another config: wait until this one serves
    await wait_until(
        lambda: health(client),
        lambda h: set(h["models"]) == {"q4", "q2"},
        what="the known start config served",
    )
    for name in ("q4", "q2"):
        assert (await generate(client, name)).status_code == 200
    started = {"q4": asyncio.Event(), "q2": asyncio.Event()}
    async with slow_steps(client, 0.1):  # 300 steps: 30 s or more, on any machine
        streams = [asyncio.ensure_future(stream(client, m, e)) for m, e in started.items()]
        await asyncio.wait_for(asyncio.gather(*(e.wait() for e in started.values())), 60)
        before = await reloads(client)
        unloaded = await unload_counts(client)  # other tests of this module unload too
        # q8 added, q2 removed, q4 changed (larger context): all while both streams run
        edited = models("q8") | models("q4", context_size=1024)
        rewrite(path, orjson.dumps(config(folder, edited)))
        await wait_until(lambda: reloads(client), lambda n: n > before, 10, "the reload")
        assert not any(s.done() for s in streams), "the streams ended before the reload"
        assert (await generate(client, "q2")).status_code == 404  # removed: no new requests
        assert (await generate(client, "q8")).status_code == 200  # added
        assert (await generate(client, "q4")).status_code == 200  # changed: a fresh copy
        assert not any(s.done() for s in streams), "the streams ended before the new copies"
    # every stream finishes on the copy it started on (stream() checks every frame)
    await asyncio.gather(*streams)
    body = await health(client)
    assert body["models"]["q4"]["context_size"] == 1024
    await wait_until(
        lambda: health(client),
        lambda h: set(h["loaded_models"]) == {"q4", "q8"} and not h["unloading_models"],
        30,
        "the old copies unloaded",
    )
    after = await unload_counts(client)
    assert after.get(("q2", "removed"), 0) == unloaded.get(("q2", "removed"), 0) + 1
    assert after.get(("q4", "changed"), 0) == unloaded.get(("q4", "changed"), 0) + 1


async def unload_counts(client: httpx.AsyncClient) -> dict[tuple[str, str], float]:
    """edge_llm_model_unloads_total by (model, reason), from /metrics."""
    counts = {}
    for line in (await client.get("/metrics")).text.splitlines():
        if line.startswith("edge_llm_model_unloads_total{"):
            labels, value = line.removeprefix("edge_llm_model_unloads_total").split(" ")
            model = labels.split('model="')[1].split('"')[0]
            reason = labels.split('reason="')[1].split('"')[0]
            counts[model, reason] = float(value)
    return counts


async def test_invalid_edit_keeps_the_old_config(
    client: httpx.AsyncClient, folder: Path, reload_server: LiveServer
) -> None:
    path = folder / "config.json"
    good = config(folder, models("q4", "q8"))
    rewrite(path, orjson.dumps(good))
    before = await reloads(client)
    await wait_until(lambda: reloads(client), lambda n: n > before, 10, "the reload")
    bad = config(folder, models("q4", "q8") | models("q2", context_size=10))
    rewrite(path, orjson.dumps(bad))
    body = await wait_until(
        lambda: health(client), lambda h: "config_error" in h, 10, "the error shown"
    )
    assert "models.q2.context_size: must be at least 64, got 10" in body["config_error"]
    assert (await generate(client, "q2")).status_code == 404  # not applied
    assert (await generate(client, "q8")).status_code == 200  # still serving
    # SIGHUP re-reads even an unchanged file: the error stays until the file is fixed
    seen = (await health(client))["config"]
    reload_server.process.send_signal(signal.SIGHUP)
    body = await wait_until(
        lambda: health(client),
        lambda h: h["config"]["attempts"] > seen["attempts"],
        10,
        "the re-read",
    )
    assert "config_error" in body and body["config"]["reloads"] == seen["reloads"]
    rewrite(path, orjson.dumps(good | {"server": good["server"] | {"max_body_bytes": 4096}}))
    body = await wait_until(
        lambda: health(client), lambda h: "config_error" not in h, 10, "the error cleared"
    )
    assert body["config"]["error"] is None
    log = (REPO / "tests" / "artifacts" / "reload.log").read_text()
    assert "server.max_body_bytes changed; it takes effect after a restart" in log
    assert "config not reloaded, the old one keeps serving" in log


async def test_budget_default_model_and_limits_apply_at_once(
    client: httpx.AsyncClient, folder: Path
) -> None:
    """docs/memory-and-lifecycle.md: memory_budget_mb, default_model and request limits need
    no restart."""
    path = folder / "config.json"
    start = config(folder, models("q4", "q2"))
    rewrite(path, orjson.dumps(start))
    await wait_until(lambda: health(client), lambda h: set(h["models"]) == {"q4", "q2"})
    first = await client.post("/generate", json={"prompt": "Hi.", "max_tokens": 9})
    assert first.status_code == 200 and first.json()["model"] == "q4", first.text
    before = await reloads(client)
    limits = {"memory_budget_mb": 2000, "default_model": "q2", "max_tokens_limit": 8}
    rewrite(path, orjson.dumps(start | {"server": start["server"] | limits}))
    body = await wait_until(lambda: health(client), lambda h: h["config"]["reloads"] > before)
    try:
        assert body["memory"]["budget_bytes"] == 2000 << 20 and body["default_model"] == "q2"
        unnamed = await client.post("/generate", json={"prompt": "Hi.", "max_tokens": 8})
        assert unnamed.status_code == 200 and unnamed.json()["model"] == "q2", unnamed.text
        over = await client.post("/generate", json={"prompt": "Hi.", "max_tokens": 9})
        assert over.status_code == 400 and "max_tokens: at most 8" in over.text, over.text
    finally:  # the other tests of this module start from the plain config
        before = await reloads(client)
        rewrite(path, orjson.dumps(start))
        await wait_until(lambda: reloads(client), lambda n: n > before, 10, "the reload")


async def embed(client: httpx.AsyncClient, model: str, text: str = "A cat.") -> httpx.Response:
    return await client.post("/v1/embeddings", json={"model": model, "input": text})


async def test_embeddings_follow_config_edits(client: httpx.AsyncClient, folder: Path) -> None:
    """An added model embeds, a changed one gets a fresh context, a removed one is a 404."""
    path = folder / "config.json"
    rewrite(path, orjson.dumps(config(folder, models("q4", "q2"))))
    await wait_until(
        lambda: health(client), lambda h: set(h["models"]) == {"q4", "q2"}, what="the start"
    )
    long = " ".join(["word"] * 40)  # over 32 tokens, under 64
    for name in ("q4", "q2"):
        assert (await embed(client, name, long)).status_code == 200  # batch_tokens 64
    before = await reloads(client)
    rewrite(path, orjson.dumps(config(folder, models("q8") | models("q4", batch_tokens=32))))
    await wait_until(lambda: reloads(client), lambda n: n > before, 10, "the reload")
    added = await embed(client, "q8")
    assert added.status_code == 200, added.text
    assert len(added.json()["data"][0]["embedding"]) == 576
    # a fresh context, made for the new batch_tokens
    changed = await embed(client, "q4", long)
    assert changed.status_code == 400 and "embeds at most 32 per input" in changed.text
    assert (await embed(client, "q2")).status_code == 404
    log = (REPO / "tests" / "artifacts" / "reload.log").read_text()
    for name in ("q4", "q2"):
        assert f"model {name}: embedding context retired by the config change" in log


async def test_an_embedding_context_takes_no_model_slot(
    client: httpx.AsyncClient, folder: Path
) -> None:
    """With max_loaded_models 1, a model's embedding context does not keep its own
    generator (or another model) from loading."""
    path = folder / "config.json"
    body = config(folder, models("q4", "q2"))
    body["server"]["max_loaded_models"] = 1
    before = await reloads(client)
    rewrite(path, orjson.dumps(body))
    await wait_until(lambda: reloads(client), lambda n: n > before, 10, "the reload")
    # a lower limit binds the next load (models an earlier test left loaded stay)
    await unload_all(client)
    assert (await embed(client, "q4")).status_code == 200
    for name in ("q4", "q2", "q4"):
        reply = await generate(client, name)
        assert reply.status_code == 200, reply.text
    assert len((await health(client))["loaded_models"]) == 1
    before = await reloads(client)  # leave no model limit behind for the other tests
    rewrite(path, orjson.dumps(config(folder, models("q4", "q2"))))
    await wait_until(lambda: reloads(client), lambda n: n > before, 10, "the reload")


async def test_a_reload_while_an_embedding_context_is_made(
    client: httpx.AsyncClient, folder: Path
) -> None:
    """The context made for the old config serves the request that asked for it, and is
    not kept: the next request gets one made for the new config."""
    path = folder / "config.json"
    fresh_name = {"q4b": models("q4")["q4"]}  # a model no earlier test made a context for
    rewrite(path, orjson.dumps(config(folder, models("q4", "q2") | fresh_name)))
    await wait_until(lambda: health(client), lambda h: "q4b" in h["models"], 10, "q4b added")
    # 5 s: the reload (polled each second) must land while the context is being made
    await arm_fault(client, "embedder_delay", seconds=5.0)
    long = " ".join(["word"] * 40)  # over 32 tokens, under 64
    asking = asyncio.ensure_future(embed(client, "q4b", long))
    # the fault has fired (used up as it starts its sleep): the context is being made
    await wait_until(
        lambda: armed_faults(client), lambda names: "embedder_delay" not in names, 10, "the delay"
    )
    before = await reloads(client)
    changed = {"q4b": fresh_name["q4b"] | {"batch_tokens": 32}}
    rewrite(path, orjson.dumps(config(folder, models("q4", "q2") | changed)))
    await wait_until(lambda: reloads(client), lambda n: n > before, 10, "the reload")
    assert not asking.done(), "the context was made before the reload: nothing was tested"
    assert (await asking).status_code == 200  # made for batch_tokens 64
    fresh = await embed(client, "q4b", long)
    assert fresh.status_code == 400 and "embeds at most 32 per input" in fresh.text
    log = (REPO / "tests" / "artifacts" / "reload.log").read_text()
    assert "model q4b: config changed while its embedding context was made" in log
