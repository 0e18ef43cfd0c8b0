"""Replicas behind nginx sharing a Redis task store (``make cluster``'s topology, run
here on loopback): tasks readable everywhere, streams through the proxy token by
token, a replica killed mid-load, Redis killed and brought back."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from server.cluster.local import Cluster, running_cluster
from tests.conftest import (
    ARTIFACTS,
    shipped_config,
    slow_steps,
    task_record,
    wait_for_status,
    wait_until,
    write_config,
)

LONG = {"prompt": "Write a long story about a lighthouse.", "max_tokens": 400, "temperature": 0}


def start_cluster(folder: Path, faults: str = "") -> Iterator[Cluster]:
    """Faults enabled on every replica (``faults`` armed from the start, see batching.faults)."""
    config = write_config(folder, shipped_config(folder, result_cache={"enabled": False}))
    env = {"EDGE_LLM_FAULTS": faults}
    with running_cluster(config, folder / "cluster", env=env) as cluster:
        yield cluster


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    yield from start_cluster(tmp_path_factory.mktemp("cluster"))


def replica_of(reply: httpx.Response) -> str:
    """The replica that answered, from nginx's X-Upstream (the last address it tried)."""
    upstream: str = reply.headers.get("x-upstream", "")
    return upstream.split(",")[-1].strip()


async def test_a_task_sent_through_nginx_is_readable_and_cancellable_via_each_replica(
    cluster: Cluster,
) -> None:
    async with httpx.AsyncClient(base_url=cluster.url, timeout=120) as lb:
        sent = await lb.post(
            "/send_text",
            json={"prompt": "Say hi.", "max_tokens": 8},
            headers={"X-Request-ID": "r-1"},
        )
        assert sent.status_code == 202, sent.text
        task_id = sent.json()["task_id"]
        long = (await lb.post("/send_text", json=LONG)).json()["task_id"]
    records = []
    for replica in cluster.replicas:
        async with httpx.AsyncClient(base_url=replica.url, timeout=120) as direct:
            records.append(await wait_for_status(direct, task_id, "done"))
    assert records[0] == records[1] and records[0]["request_id"] == "r-1"
    assert records[0]["result"]["usage"]["completion_tokens"] > 0
    # a cancel sent to the replica that does not run the task reaches the one that does
    async with httpx.AsyncClient(base_url=cluster.replicas[0].url, timeout=120) as first:
        owner = (await wait_for_status(first, long, "running"))["replica"]
        healths = [(await first.get(r.url + "/health_check")).json() for r in cluster.replicas]
        other = next(
            r
            for r, h in zip(cluster.replicas, healths, strict=True)
            if h["task_store"]["replica"] != owner
        )
        cancelled = await first.delete(other.url + f"/tasks/{long}")
    assert cancelled.status_code == 200, cancelled.text
    assert cancelled.json()["status"] == "cancelled"


async def test_16_streams_through_nginx_arrive_token_by_token(cluster: Cluster) -> None:
    async def stream(lb: httpx.AsyncClient, i: int) -> tuple[str, list[float]]:
        prompt = f"Count from {i} to {i + 40}."  # greedy: a sampled stream may end early
        body = {"prompt": prompt, "max_tokens": 32, "temperature": 0, "stream": True}
        arrivals = []
        async with lb.stream("POST", "/generate", json=body) as reply:
            assert reply.status_code == 200
            async for line in reply.aiter_lines():
                if line.startswith("data: {") and '"finish_reason"' not in line:
                    arrivals.append(time.monotonic())
        return replica_of(reply), arrivals

    lb = httpx.AsyncClient(base_url=cluster.url, timeout=300)
    async with lb, contextlib.AsyncExitStack() as slowed:
        # every step takes 20 ms or more: events apart in time on a fast machine too
        for live in cluster.replicas:
            direct = httpx.AsyncClient(base_url=live.url, timeout=60)
            await slowed.enter_async_context(direct)
            await slowed.enter_async_context(slow_steps(direct, 0.02))
        results = await asyncio.gather(*(stream(lb, i) for i in range(16)))
    per_replica = {r.url.removeprefix("http://"): 0 for r in cluster.replicas}
    for replica, arrivals in results:
        per_replica[replica] += 1
        assert len(arrivals) >= 6, arrivals
        # token by token: the events come one per decode step, apart in time (a
        # buffering proxy delivers them together, microseconds apart). Not "spread over
        # the stream's life": with the cores shared, 16 prompts' prefill may take most
        # of it, and a fast decode of 32 tokens little.
        spread = arrivals[-1] - arrivals[0]
        gaps = [b - a for a, b in itertools.pairwise(arrivals)]
        assert spread > 0.1 and sum(g > 0.005 for g in gaps) >= len(gaps) / 2, arrivals
    assert all(per_replica.values()), per_replica  # least_conn used both replicas
    figures("streams_per_replica", per_replica)


async def test_without_redis_task_routes_503_while_generate_serves_then_recover(
    cluster: Cluster,
) -> None:
    async with httpx.AsyncClient(base_url=cluster.url, timeout=120) as lb:
        before = (await lb.post("/send_text", json={"prompt": "Hi.", "max_tokens": 4})).json()
        await wait_for_status(lb, before["task_id"], "done")
        cluster.redis.kill()
        try:
            for method, path in [
                ("POST", "/send_text"),
                ("GET", f"/get_task_status/{before['task_id']}"),
                ("GET", "/tasks/"),
            ]:
                reply = await lb.request(method, path, json={"prompt": "Hi.", "max_tokens": 4})
                assert reply.status_code == 503, reply.text
                assert "task store is unreachable" in reply.json()["error"]["message"]
                assert reply.headers["retry-after"]
            generated = await lb.post("/generate", json={"prompt": "Hi.", "max_tokens": 4})
            assert generated.status_code == 200, generated.text
            health = (await lb.get("/health_check")).json()
            assert health["tasks"] is None
        finally:
            cluster.redis.start()
        # back: new tasks are accepted, and what was stored before is still there
        sent = await wait_until(
            lambda: lb.post("/send_text", json={"prompt": "Hi.", "max_tokens": 4}),
            lambda reply: reply.status_code == 202,
            within=30,
            what="a task accepted after Redis returned",
        )
        await wait_for_status(lb, sent.json()["task_id"], "done")
        assert (await wait_for_status(lb, before["task_id"], "done"))["result"]
        for replica in cluster.replicas:  # an outage is not a death: nobody was reaped
            health = (await lb.get(replica.url + "/health_check")).json()
            assert health["task_store"]["reaped_tasks"] == 0, health


def figures(name: str, value: Any) -> None:
    """The figures docs/scaling-out.md quotes, kept beside the logs."""
    path = ARTIFACTS / "cluster_figures.json"
    ARTIFACTS.mkdir(exist_ok=True)
    known = orjson.loads(path.read_bytes()) if path.exists() else {}
    path.write_bytes(orjson.dumps({**known, name: value}, option=orjson.OPT_INDENT_2))


async def test_kill_9_of_a_replica_mid_load(tmp_path: Path) -> None:
    """Every request is answered by the survivor or fails with a clear 502; the dead
    replica's unfinished tasks are run again by the survivor, each once, and answered;
    new requests keep flowing."""
    # every step takes 50 ms or more: a task of 120 tokens outlives the kill, 4 s into the
    # load, on a fast machine too
    for cluster in start_cluster(tmp_path, faults="step_delay=*@0.05"):
        await kill_mid_load(cluster)


async def kill_mid_load(cluster: Cluster) -> None:
    dead, survivor = cluster.replicas
    dead_addr = dead.url.removeprefix("http://")
    outcomes: list[tuple[float, int, str, str]] = []  # (sent at, status, replica, error)
    tasks: list[str] = []
    killed_at: list[float] = []
    stop = asyncio.Event()

    async def worker(lb: httpx.AsyncClient, i: int) -> None:
        while not stop.is_set():
            sent_at = time.time()
            if i % 4 == 0:  # a quarter send a task a second, tasks that outlive the kill
                reply = await lb.post("/send_text", json=LONG | {"max_tokens": 120})
                if reply.status_code == 202:
                    tasks.append(reply.json()["task_id"])
                await asyncio.sleep(1)
            else:
                body = {"prompt": f"Name {i} colours.", "max_tokens": 16, "temperature": 0}
                reply = await lb.post("/generate", json=body)
            error = reply.json()["error"]["message"] if reply.status_code >= 400 else ""
            outcomes.append((sent_at, reply.status_code, replica_of(reply), error))

    async with httpx.AsyncClient(base_url=cluster.url, timeout=120) as lb:
        # both replicas have loaded the model before the clock starts
        for replica in cluster.replicas:
            await lb.post(replica.url + "/generate", json={"prompt": "Hi", "max_tokens": 2})
        dead_id = (await lb.get(dead.url + "/health_check")).json()["task_store"]["replica"]
        workers = [asyncio.ensure_future(worker(lb, i)) for i in range(8)]
        await asyncio.sleep(4)
        owned_before = [t for t in tasks if (await task_record(lb, t))["replica"] == dead_id]
        killed_at.append(time.time())
        dead.process.kill()  # SIGKILL: no drain, no goodbye to Redis
        await asyncio.sleep(8)
        stop.set()
        await asyncio.gather(*workers)
        stopped = time.time()

        # every task answered; the dead replica's unfinished ones by the survivor's second run
        survivor_id = (await lb.get(survivor.url + "/health_check")).json()["task_store"]
        rerun = []
        for task_id in tasks:
            record = await wait_for_status(lb, task_id, "done", "failed", "cancelled", within=180)
            assert record["status"] == "done", record
            if record["attempts"] > 1:
                assert record["attempts"] == 2 and record["replica"] == survivor_id["replica"]
                (failure,) = record["failures"]
                assert failure.startswith(f"replica {dead_id} stopped answering while"), record
                rerun.append(task_id)
        health = (await lb.get(survivor.url + "/health_check")).json()
    assert owned_before, "no task ran on the killed replica: the test proves nothing"
    assert rerun and set(rerun) <= set(owned_before)
    assert health["task_store"]["taken_over_tasks"] == len(rerun)  # exactly once each
    kill = killed_at[0]
    after = [o for o in outcomes if o[0] > kill + 0.5]
    assert after and all(o[1] in (200, 202) for o in after), after  # new requests flow
    assert {o[2] for o in after} == {survivor.url.removeprefix("http://")}
    for _, status, _, error in outcomes:
        assert status in (200, 202) or (status == 502 and "send the request again" in error)
    window = (kill, stopped)
    figures("kill_9", kill_figures(cluster, outcomes, window, dead_addr, rerun, len(tasks)))


def kill_figures(
    cluster: Cluster,
    outcomes: list[tuple[float, int, str, str]],
    window: tuple[float, float],
    dead_addr: str,
    rerun: list[str],
    num_tasks: int,
) -> dict[str, Any]:
    kill, stopped = window
    answered: dict[str, dict[str, int]] = {"before the kill": {}, "after": {}}
    for sent_at, status, replica, _ in outcomes:
        if status in (200, 202):
            counts = answered["before the kill" if sent_at < kill else "after"]
            counts[replica] = counts.get(replica, 0) + 1
    # nginx's access log: "<msec> <id> "<request>" <status> upstream=<a>[, <b>] ...",
    # <msec> when the request ended; "<dead>, <survivor>": refused, passed on
    passed_on = []
    for line in cluster.access_log.read_text().splitlines():
        ended = float(line.split(" ", 1)[0])
        if kill < ended < stopped and f"upstream={dead_addr}, " in line:
            passed_on.append(round(ended - kill, 3))
    return {
        "requests": len(outcomes),
        "answered_per_replica": answered,
        "failed": [(status, error) for _, status, _, error in outcomes if status >= 400],
        "tasks": num_tasks,
        "tasks_run_again_by_the_survivor": len(rerun),
        "load_after_the_kill_s": round(stopped - kill, 1),
        "requests_refused_by_the_dead_replica_and_passed_on_s_after_the_kill": passed_on,
    }
