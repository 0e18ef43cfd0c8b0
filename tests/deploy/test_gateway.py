"""SMG, the cache-aware gateway, behind nginx's completion routes (``make cluster
GATEWAY=cache_aware``'s topology on loopback, real processes): conversations return to
the replica holding their prefix, streams pass token by token, and a replica's
``kill -9`` under load loses no accepted task while the gateway stops choosing it."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from openai import AsyncOpenAI
from prometheus_client.parser import text_string_to_metric_families

from server.cluster.local import Cluster, running_cluster
from tests.conftest import (
    DEFAULT_MODEL,
    shipped_config,
    slow_steps,
    task_record,
    wait_for_status,
    wait_until,
    write_config,
)
from tests.server.test_cluster import figures

ROUTED = "x-smg-routed-worker-id"  # SMG's header: the replica it sent the request to
TOPICS = ("lighthouses", "volcanoes", "bees", "glaciers")


def start_cluster(folder: Path, faults: str = "") -> Generator[Cluster, None, None]:
    config = write_config(folder, shipped_config(folder, result_cache={"enabled": False}))
    env = {"EDGE_LLM_FAULTS": faults}
    with running_cluster(config, folder / "cluster", env=env, gateway="cache_aware") as cluster:
        yield cluster


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    yield from start_cluster(tmp_path_factory.mktemp("gateway"))


def client(cluster: Cluster) -> AsyncOpenAI:
    """The official client, pointed at nginx (which passes completions to SMG)."""
    return AsyncOpenAI(base_url=cluster.url + "/v1", api_key="none", timeout=120, max_retries=0)


async def reused_tokens(http: httpx.AsyncClient, replica_url: str) -> float:
    """A replica's prefix-hit counter: prompt tokens whose KV came from its prefix cache."""
    text = (await http.get(replica_url + "/metrics")).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "edge_llm_prompt_tokens_reused_total":
                return sample.value
    return 0.0


async def test_conversations_return_to_the_replica_holding_their_prefix(cluster: Cluster) -> None:
    openai = client(cluster)
    turns: list[tuple[str, int, str, int, int]] = []  # (topic, turn, replica, prompt, cached)

    async def converse(topic: str) -> None:
        system = f"You are a patient teacher. Every answer is about {topic}. " * 6
        messages: list[Any] = [{"role": "system", "content": system}]
        for turn, question in enumerate(("What are they?", "Why?", "Tell me more.")):
            messages.append({"role": "user", "content": question})
            raw = await openai.chat.completions.with_raw_response.create(
                model=DEFAULT_MODEL, messages=messages, max_tokens=12, temperature=0
            )
            reply = raw.parse()
            assert reply.usage is not None and reply.usage.prompt_tokens_details is not None
            cached = reply.usage.prompt_tokens_details.cached_tokens or 0
            prompt = reply.usage.prompt_tokens
            turns.append((topic, turn, raw.headers[ROUTED], prompt, cached))
            messages.append({"role": "assistant", "content": reply.choices[0].message.content})

    async with openai, httpx.AsyncClient(timeout=60) as http:
        before = [await reused_tokens(http, r.url) for r in cluster.replicas]
        await asyncio.gather(*(converse(topic) for topic in TOPICS))
        after = [await reused_tokens(http, r.url) for r in cluster.replicas]

    for topic in TOPICS:
        mine = sorted(t for t in turns if t[0] == topic)
        assert len({replica for _, _, replica, _, _ in mine}) == 1, mine  # one replica
        for _, _, _, prompt, cached in mine[1:]:
            assert cached >= prompt // 2, mine  # the history came from its prefix cache
    # each replica's prefix-hit counter moved by the cached tokens of what it was sent
    for replica, was, now in zip(cluster.replicas, before, after, strict=True):
        sent_here = sum(cached for _, _, routed, _, cached in turns if routed == replica.url)
        assert now - was == sent_here, (replica.url, now - was, turns)


async def test_streams_through_the_gateway_arrive_token_by_token(cluster: Cluster) -> None:
    openai = client(cluster)

    async def stream(i: int) -> tuple[str, list[float]]:
        messages: Any = [{"role": "user", "content": f"Count from {i} to {i + 40}."}]
        raw = await openai.chat.completions.with_raw_response.create(
            model=DEFAULT_MODEL, messages=messages, max_tokens=24, temperature=0, stream=True
        )
        arrivals = []
        async for chunk in raw.parse():
            if chunk.choices and chunk.choices[0].delta.content:
                arrivals.append(time.monotonic())
        return raw.headers[ROUTED], arrivals

    async with openai, contextlib.AsyncExitStack() as slowed:
        # every step takes 20 ms or more: events apart in time on a fast machine too
        for live in cluster.replicas:
            direct = await slowed.enter_async_context(httpx.AsyncClient(base_url=live.url))
            await slowed.enter_async_context(slow_steps(direct, 0.02))
        results = await asyncio.gather(*(stream(i) for i in range(6)))
    for replica, arrivals in results:
        assert replica in {r.url for r in cluster.replicas}
        assert len(arrivals) >= 6, arrivals
        # one event per decode step, apart in time: a buffering proxy would deliver them
        # together, microseconds apart
        gaps = [b - a for a, b in itertools.pairwise(arrivals)]
        assert sum(g > 0.005 for g in gaps) >= len(gaps) / 2, arrivals


async def test_kill_9_of_a_replica_behind_the_gateway(tmp_path: Path) -> None:
    """Tasks (through nginx, stored in Redis) all end done; completions through SMG are
    answered, and once SMG's health check has marked the dead replica, only the
    survivor is chosen."""
    # every step 50 ms or more: a task of 80 tokens outlives the kill on a fast machine too
    clusters = start_cluster(tmp_path, faults="step_delay=*@0.05")
    try:
        for cluster in clusters:
            await kill_behind_gateway(cluster)
    finally:
        clusters.close()  # a failure stops the processes now, not when collected


async def kill_behind_gateway(cluster: Cluster) -> None:
    assert cluster.gateway is not None
    outcomes: list[tuple[float, int, str]] = []  # (sent at, status, replica chosen)
    tasks: list[str] = []
    stop = asyncio.Event()
    openai = client(cluster)

    async def chat(i: int) -> None:
        for n in itertools.count():
            if stop.is_set():
                return
            sent_at = time.time()
            messages: Any = [{"role": "user", "content": f"Name {i + n} colours."}]
            try:
                raw = await openai.chat.completions.with_raw_response.create(
                    model=DEFAULT_MODEL, messages=messages, max_tokens=12, temperature=0
                )
                outcomes.append((sent_at, raw.status_code, raw.headers.get(ROUTED, "")))
            except Exception as exc:  # an APIStatusError: the request cut by the kill
                status = getattr(exc, "status_code", 0)
                outcomes.append((sent_at, status, "error: " + str(exc)[:200]))
                await asyncio.sleep(0.1)  # an error may come at once: never spin

    async def send_tasks(lb: httpx.AsyncClient) -> None:
        # 8 at most: more would queue on the survivor behind the dead one's, past timeouts
        body = {"prompt": "Write a long story about a lighthouse.", "max_tokens": 80}
        while not stop.is_set() and len(tasks) < 8:
            reply = await lb.post("/send_text", json=body)
            assert reply.status_code == 202, reply.text
            tasks.append(reply.json()["task_id"])
            await asyncio.sleep(0.5)  # the pace of the load, not a wait for a state

    async with openai, httpx.AsyncClient(base_url=cluster.url, timeout=120) as lb:
        for replica in cluster.replicas:  # both have loaded the model before the load
            await lb.post(replica.url + "/generate", json={"prompt": "Hi", "max_tokens": 2})
        ids = {}  # replica URL -> its id in task records
        for replica in cluster.replicas:
            health = (await lb.get(replica.url + "/health_check")).json()
            ids[replica.url] = health["task_store"]["replica"]
        workers = [asyncio.ensure_future(chat(i)) for i in range(3)]
        workers.append(asyncio.ensure_future(send_tasks(lb)))

        async def owned() -> dict[str, list[str]]:
            """Replica URL -> the tasks it runs, for those SMG has sent a completion to."""
            records = [await task_record(lb, t) for t in list(tasks)]
            chosen = {o[2] for o in outcomes}
            return {
                url: [r["task_id"] for r in records if r.get("replica") == ids[url]]
                for url in ids
                if url in chosen and any(r.get("replica") == ids[url] for r in records)
            }

        try:
            # the replica to kill runs a task and has answered the gateway (cache-aware may
            # prefer either one): the kill proves something
            busy = await wait_until(
                owned, bool, within=120, what="a replica running a task and answering SMG"
            )
            dead = next(r for r in cluster.replicas if r.url in busy)
            survivor = next(r for r in cluster.replicas if r is not dead)
            owned_by_dead = busy[dead.url]
            killed_at = time.time()
            dead.process.kill()  # SIGKILL: no drain, no goodbye to Redis or the gateway
            await wait_until(
                lambda: lb.get(cluster.gateway.url + "/workers"),  # type: ignore[union-attr]
                lambda reply: not worker_health(reply.json())[dead.url],
                within=30,
                what="SMG marking the dead replica unhealthy",
            )
            marked_at = time.time()
            await wait_until(
                lambda: asyncio.sleep(0, outcomes),
                lambda seen: sum(o[0] > marked_at for o in seen) >= 8,
                what="8 completions sent and answered after the mark",
            )
        finally:  # on a failure too: workers left running would spin on closed clients
            stop.set()
            await asyncio.gather(*workers, return_exceptions=True)
        for task_id in tasks:
            record = await wait_for_status(lb, task_id, "done", "failed", within=180)
            assert record["status"] == "done", record
        rerun = [t for t in tasks if (await task_record(lb, t))["attempts"] > 1]

    assert set(owned_by_dead) & set(rerun), (owned_by_dead, rerun)  # the dead one's were run again
    after = [o for o in outcomes if o[0] > marked_at]
    assert after and all(o[1] == 200 and o[2] == survivor.url for o in after), [
        o for o in after if o[1] != 200 or o[2] != survivor.url
    ]
    # before the mark, a completion cut by the kill is the one error a client may see
    cut = [o for o in outcomes if o[1] != 200]
    assert all(killed_at - 1 < o[0] < marked_at and o[1] >= 500 for o in cut), cut
    answered = {"before the kill": 0, "kill to mark": 0, "after the mark": 0}
    for sent_at, status, _ in outcomes:
        if status == 200 and sent_at < killed_at:
            answered["before the kill"] += 1
        elif status == 200:
            answered["kill to mark" if sent_at < marked_at else "after the mark"] += 1
    figures(
        "gateway_kill_9",
        {
            "completions_answered": answered,
            "completions_cut": [(status, replica) for _, status, replica in cut],
            "tasks": len(tasks),
            "tasks_run_again_by_the_survivor": len(rerun),
            "smg_marked_the_replica_unhealthy_s_after_the_kill": round(marked_at - killed_at, 2),
        },
    )


def worker_health(listing: dict[str, Any]) -> dict[str, bool]:
    """SMG's ``GET /workers``: each replica's URL and whether SMG counts it healthy."""
    return {w["url"]: w["is_healthy"] for w in listing["workers"]}
