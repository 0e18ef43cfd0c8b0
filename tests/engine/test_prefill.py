"""Reading a long prompt beside running streams: the step's prompt budget, progress events
and keep-alives, on the live server."""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from bench.loadgen import long_prompt
from speculative.budget import AUTO_STALL, MIN_PROMPT_TOKENS
from tests.conftest import DEFAULT_MODEL, config_variant, health, running_server, wait_until


@pytest.fixture(scope="module")
def prefill_server(test_config: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    folder = tmp_path_factory.mktemp("prefill")
    config = orjson.loads(config_variant(test_config, folder, stream_keepalive_s=0.2).read_bytes())
    # the smallest step target: beside decoding streams, MIN_PROMPT_TOKENS a step
    config["models"][DEFAULT_MODEL]["max_step_ms"] = 1
    path = folder / "prefill.json"
    path.write_bytes(orjson.dumps(config))
    with running_server(path, name="prefill-server", env={"EDGE_LLM_FAULTS": ""}) as url:
        yield url


@pytest.fixture
async def client(prefill_server: str) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=prefill_server, timeout=300) as c:
        yield c


def body(prompt: str, max_tokens: int, **extra: Any) -> dict[str, Any]:
    fields = {"model": DEFAULT_MODEL, "prompt": prompt, "max_tokens": max_tokens}
    return {**fields, "temperature": 0, "cache": False, "cache_prompt": False, **extra}


async def frames(client: httpx.AsyncClient, request: dict[str, Any]) -> list[str]:
    async with client.stream("POST", "/v1/completions", json={**request, "stream": True}) as r:
        assert r.status_code == 200
        return [line async for line in r.aiter_lines() if line]


async def test_a_prompt_beside_decoding_streams_is_fed_over_many_steps(
    client: httpx.AsyncClient,
) -> None:
    prompt = long_prompt(400)
    alone = (await client.post("/v1/completions", json=body(prompt, 1))).json()
    assert alone["timings"]["prompt_steps"] == 1  # nothing decoding: the whole step
    no_end = {"logit_bias": {"0": -100, "2": -100, "4": -100}}  # they run all 300 steps
    streams = [
        asyncio.ensure_future(
            client.post("/v1/completions", json=body(f"Count to {i}0.", 300, **no_end))
        )
        for i in range(4)
    ]
    await wait_until(lambda: health(client), lambda h: h["running"] >= 4, what="4 running")
    beside = (await client.post("/v1/completions", json=body(prompt + " ", 1))).json()
    replies = await asyncio.gather(*streams)
    steps = beside["timings"]["prompt_steps"]
    assert steps >= beside["usage"]["prompt_tokens"] // (2 * MIN_PROMPT_TOKENS), beside["timings"]
    assert all(r.json()["usage"]["completion_tokens"] == 300 for r in replies)
    model = (await health(client))["models"][DEFAULT_MODEL]
    budget = model["step_budget"]
    assert budget["max_step_ms"] == 1 and budget["prompt_token_ms"] > 0
    # four streams' decode-only steps were timed with and without waiting for the loop
    assert "4-7" in model["loop_handoff"] and model["executor"]["loop_wait_seconds"] > 0


async def test_progress_events_then_text(client: httpx.AsyncClient) -> None:
    prompt = long_prompt(1400)  # three steps of 512 tokens
    lines = await frames(client, body(prompt, 4, return_progress=True))
    events = [orjson.loads(x[6:]) for x in lines if x.startswith("data: {")]
    progress = [e["prompt_progress"] for e in events if "prompt_progress" in e]
    assert len(progress) >= 3, lines[:5]
    assert [p["processed"] for p in progress] == sorted(p["processed"] for p in progress)
    # the first report comes at admission, before any token is read (llama-server's)
    assert progress[0]["processed"] == progress[0]["cache"] == 0 < progress[0]["total"]
    assert all(p["total"] > p["processed"] > 0 and p["cache"] == 0 for p in progress[1:-1])
    assert progress[-1]["processed"] == progress[-1]["total"]  # and the last, all of it read
    first_text = next(i for i, e in enumerate(events) if e.get("choices"))
    assert first_text > events.index(next(e for e in events if "prompt_progress" in e))
    plain = await frames(client, body(prompt + " ", 4))  # not asked: no progress
    assert not any("prompt_progress" in x for x in plain)


async def test_keep_alive_comments_while_nothing_is_decoded(client: httpx.AsyncClient) -> None:
    await client.post("/debug/faults", json={"name": "step_delay", "times": 4, "seconds": 0.5})
    lines = await frames(client, body("Say hello.", 4))
    first_data = next(i for i, x in enumerate(lines) if x.startswith("data: {"))
    assert any(x.startswith(": keep-alive") for x in lines[:first_data]), lines[:6]
    assert lines[-1] == "data: [DONE]"


async def test_by_default_the_step_target_follows_the_host(server: str) -> None:
    """No max_step_ms: the target is AUTO_STALL decode-only steps, from costs measured
    here; where that leaves room for only a part of a long prompt, it is fed in parts
    while the streams decode."""
    async with httpx.AsyncClient(base_url=server, timeout=300) as shared:
        no_end = {"logit_bias": {"0": -100, "2": -100, "4": -100}}
        streams = [
            asyncio.ensure_future(
                shared.post("/v1/completions", json=body(f"List {i}0 fruits.", 200, **no_end))
            )
            for i in range(4)
        ]
        await wait_until(lambda: health(shared), lambda h: h["running"] >= 4, what="4 running")
        beside = (await shared.post("/v1/completions", json=body(long_prompt(600), 1))).json()
        replies = await asyncio.gather(*streams)
        budget = (await health(shared))["models"][DEFAULT_MODEL]["step_budget"]
    assert all(r.json()["usage"]["completion_tokens"] == 200 for r in replies)
    assert budget["max_step_ms"] == "auto" and budget["decode_step_ms"] > 0, budget
    # what the automatic target left for prompt tokens per step, at the measured costs
    per_step = (AUTO_STALL - 1) * budget["decode_step_ms"] / budget["prompt_token_ms"]
    tokens, steps = beside["usage"]["prompt_tokens"], beside["timings"]["prompt_steps"]
    # On any host: never starved. Each step carried about what the target leaves at the
    # measured costs or more (the target grows while the prompt waits), so the prompt took
    # no more steps than that allows (halved for costs that drift during the run).
    most = math.ceil(tokens / max(MIN_PROMPT_TOKENS, per_step / 2)) + 1
    assert steps <= most, (beside["timings"], budget)
    # Where a step is slow: fed in parts, so the streams keep their pace.
    if per_step < tokens / 4:
        assert steps >= 3, (beside["timings"], budget)
