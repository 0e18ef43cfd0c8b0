"""Process-level behaviour, each on a server of its own: kill -9, SIGTERM, expiry, keys, logs."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from server.launcher import LiveServer
from tests.conftest import (
    ARTIFACTS,
    REPO,
    arm_fault,
    config_variant,
    health,
    live_server,
    task_record,
    wait_for_status,
    wait_until,
)

LONG = {"prompt": "Write a very long essay about the sea.", "max_tokens": 3000, "temperature": 0}
# greedy, it lists numbers until max_tokens (never stops early)
COUNT = {
    "prompt": "List the numbers from 1 to 10000, separated by commas.",
    "max_tokens": 60,
    "temperature": 0,
}
SHORT = {"prompt": "Name three colours.", "max_tokens": 4, "temperature": 0}


async def send_task(client: httpx.AsyncClient, body: dict[str, Any]) -> str:
    reply = await client.post("/send_text", json=body)
    assert reply.status_code == 202, reply.text
    task_id: str = reply.json()["task_id"]
    return task_id


async def listing(url: str) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=url, timeout=60) as client:
        body: dict[str, Any] = (await client.get("/tasks/", params={"per_page": 100})).json()
        return body


async def wait_for_queued(client: httpx.AsyncClient, count: int) -> None:
    await wait_until(lambda: health(client), lambda h: h["waiting"] == count, 30, "queued")


async def sigterm_and_wait_for_draining(live: LiveServer, client: httpx.AsyncClient) -> None:
    """SIGTERM, then wait until the server refuses new work (it drains on the loop)."""
    live.process.send_signal(signal.SIGTERM)
    await wait_until(
        lambda: client.get("/v1/models"), lambda r: r.status_code == 503, 30, "draining"
    )


PROMPTS = [f"List the numbers from {n} to 10000, separated by commas." for n in (1, 5, 9)]
NUM_TASKS = 50


@pytest.mark.parametrize("kill", [signal.SIGKILL, signal.SIGABRT], ids=["kill-9", "abort"])
async def test_tasks_are_answered_once_after_the_process_dies(
    test_config: Path, tmp_path: Path, kill: signal.Signals
) -> None:
    """The issue's goal: killed during a load of 50 tasks, 50 answered after the restart,
    none twice; greedy reruns give the text a run that was not cut short gives; a stream
    open at the kill ends with a transport error, not a hang."""
    config = config_variant(test_config, tmp_path)
    body = {"max_tokens": 12, "temperature": 0}
    # Faults on for the first process only: its steps are slowed (50 ms each, ~8 s for the
    # load), so the kill finds work under way on a fast machine too.
    faults = {"EDGE_LLM_FAULTS": ""}
    with live_server(config, "--max-batch-size", "4", name=f"kill-{kill.name}", env=faults) as live:
        async with httpx.AsyncClient(base_url=live.url, timeout=60) as client:
            await arm_fault(client, "step_delay", None, 0.05)
            ids = [
                await send_task(client, {**body, "prompt": PROMPTS[i % len(PROMPTS)]})
                for i in range(NUM_TASKS)
            ]
            await wait_for_status(client, ids[0], "done")
            before = {i: await task_record(client, i) for i in ids}
            stream = client.stream("POST", "/generate", json={**LONG, "stream": True})
            async with stream as reply:
                lines = reply.aiter_lines()
                assert reply.status_code == 200
                await anext(lines)  # open: its first text, or a keep-alive while it queues
                live.process.send_signal(kill)
                with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
                    async with asyncio.timeout(30):  # ended by the dead socket, not hung
                        async for _ in lines:
                            pass
        live.process.wait(10)
    finished_first = [i for i in ids if before[i]["status"] == "done"]
    assert len(finished_first) < NUM_TASKS  # the kill did cut the load short
    with live_server(config, "--max-batch-size", "4", name=f"kill-{kill.name}-after") as live:
        async with httpx.AsyncClient(base_url=live.url, timeout=60) as client:
            records = [await wait_for_status(client, i, "done", "failed", within=300) for i in ids]
    assert [r["status"] for r in records] == ["done"] * NUM_TASKS, records
    texts: dict[str, set[str]] = {}
    for before_kill, record in zip((before[i] for i in ids), records, strict=True):
        texts.setdefault(record["request"]["prompt"], set()).add(record["result"]["text"])
        if before_kill["status"] == "done":  # answered once: the restart left it alone
            assert record == before_kill
        elif record["attempts"] == 2:  # cut short by the kill, run again
            assert len(record["failures"]) == 1 and "died" in record["failures"][0], record
        else:  # finished by the first process between the snapshot and the kill
            assert record["attempts"] == 1 and "failures" not in record, record
    assert any(r["attempts"] == 2 for r in records)
    assert all(len(seen) == 1 for seen in texts.values()), texts  # reruns: the same text


async def test_sigterm_drains_running_and_queued_work_then_exits_0(
    test_config: Path, tmp_path: Path
) -> None:
    config = config_variant(test_config, tmp_path, drain_timeout_s=300)  # a loaded CI box
    with live_server(config, "--max-batch-size", "1", name="sigterm") as live:
        async with httpx.AsyncClient(base_url=live.url, timeout=300) as client:
            async with client.stream("POST", "/generate", json={**COUNT, "stream": True}) as stream:
                lines = stream.aiter_lines()
                assert (await anext(lines)).startswith("data: ")  # running: the one slot
                waiting = asyncio.create_task(client.post("/generate", json=SHORT))
                await wait_for_queued(client, 1)
                # the task runs last, when no connection is open any more: only the drain
                # (not uvicorn's wait for open connections) lets it finish
                task_id = await send_task(client, {**COUNT, "max_tokens": 200})
                await wait_for_queued(client, 2)
                await sigterm_and_wait_for_draining(live, client)
                refused = await client.post("/generate", json={"prompt": "Hi"})
                assert refused.status_code == 503
                assert refused.json()["error"]["type"] == "server_unavailable_error"
                assert "shutting down" in refused.json()["error"]["message"]
                assert (await client.get("/health_check")).status_code == 200
                rest = [line async for line in lines if line.startswith("data: ")]
            assert rest[-1] == "data: [DONE]"
            assert orjson.loads(rest[-2][6:])["finish_reason"] in ("length", "stop")
            queued = await waiting  # queued at SIGTERM, finished in the drain
            assert queued.status_code == 200 and queued.json()["usage"]["completion_tokens"] > 0
        assert live.process.wait(60) == 0
    with live_server(config, name="sigterm-after") as live:
        async with httpx.AsyncClient(base_url=live.url, timeout=60) as client:
            record = await task_record(client, task_id)
    assert record["status"] == "done", record
    assert record["result"]["usage"]["completion_tokens"] == 200


async def test_sigterm_past_the_drain_timeout_records_unfinished_tasks_failed(
    test_config: Path, tmp_path: Path
) -> None:
    config = config_variant(test_config, tmp_path, drain_timeout_s=1)
    with live_server(config, "--max-batch-size", "1", name="drain-timeout") as live:
        async with httpx.AsyncClient(base_url=live.url, timeout=60) as client:
            running_id = await send_task(client, LONG)
            queued_id = await send_task(client, LONG)
            await wait_for_status(client, running_id, "running")
            assert (await task_record(client, queued_id))["status"] == "queued"
            await sigterm_and_wait_for_draining(live, client)
        assert live.process.wait(30) == 0
    with live_server(config, name="drain-timeout-after") as live:
        async with httpx.AsyncClient(base_url=live.url, timeout=60) as client:
            for task_id in (running_id, queued_id):
                record = await task_record(client, task_id)
                assert record["status"] == "failed", record
                # written at shutdown, not found unfinished at the next start
                assert "shut" in record["error"] and record["attempts"] == 1, record


async def test_finished_tasks_expire_by_count_then_by_age(
    test_config: Path, tmp_path: Path
) -> None:
    config = config_variant(test_config, tmp_path)
    with live_server(config, name="expiry-first") as live:
        async with httpx.AsyncClient(base_url=live.url, timeout=60) as client:
            ids = []
            for i in range(3):
                ids.append(await send_task(client, {"prompt": f"Say {i}.", "max_tokens": 1}))
                await wait_for_status(client, ids[-1], "done")
    # expiry runs at start-up (and every 100 new tasks); same data dir, other limits
    config = config_variant(test_config, tmp_path, max_tasks=2)
    with live_server(config, name="expiry-count") as live:
        kept = await listing(live.url)
    assert kept["total"] == 2
    assert [t["task_id"] for t in kept["tasks"]] == [ids[2], ids[1]]  # the oldest went
    config = config_variant(test_config, tmp_path, task_max_age_hours=1e-6)  # 3.6 ms
    with live_server(config, name="expiry-age") as live:
        assert (await listing(live.url))["total"] == 0


async def test_api_keys_and_json_request_logs(test_config: Path, tmp_path: Path) -> None:
    config = config_variant(test_config, tmp_path, log_format="json")
    secret_prompt = "The secret word is pelican."
    env = {"EDGE_LLM_API_KEYS": "key-one,key-two"}
    with live_server(config, name="keys", env=env) as live:
        async with httpx.AsyncClient(base_url=live.url, timeout=60) as client:
            body = {"prompt": secret_prompt, "max_tokens": 3}
            missing = await client.post("/generate", json=body)
            wrong = await client.post("/generate", json=body, headers={"X-API-Key": "nope"})
            for reply in (missing, wrong):
                assert reply.status_code == 401
                error = reply.json()["error"]
                assert error["code"] == 401 and error["type"] == "authentication_error"
                assert "API key" in error["message"]
            bearer = await client.post(
                "/generate",
                json=body,
                headers={"Authorization": "Bearer key-one", "X-Request-ID": "log-me"},
            )
            header = await client.post("/generate", json=body, headers={"X-API-Key": "key-two"})
            assert bearer.status_code == header.status_code == 200
            open_health = await client.get("/health_check")
            assert open_health.status_code == 200
            # without a key: names and status only, no paths, counters or errors
            assert "models" in open_health.json() and "path" not in open_health.text
            assert set(open_health.json()) == {"status", "models"}
            keyed = await client.get("/health_check", headers={"X-API-Key": "key-one"})
            assert str(REPO / "models") in keyed.text and "running" in keyed.json()
            assert (await client.get("/metrics")).status_code == 401
    text = (ARTIFACTS / "keys.log").read_text()
    assert secret_prompt not in text and "pelican" not in text  # prompts are not logged
    lines = [orjson.loads(line) for line in text.splitlines() if line.startswith("{")]
    access = [line for line in lines if line.get("request_id") == "log-me"]
    assert len(access) == 1, lines[-5:]
    entry = access[0]
    assert entry["status"] == 200 and entry["path"] == "/generate"
    assert entry["model"] and entry["completion_tokens"] == 3 and entry["ms"] > 0


def test_missing_keys_file_stops_start_up(test_config: Path, tmp_path: Path) -> None:
    config = config_variant(test_config, tmp_path, api_keys_file="not-a-file")
    with pytest.raises(RuntimeError, match="exited"), live_server(config, name="bad-keys"):
        pass
    # the log was begun afresh by this start: the message is this run's
    assert "server.api_keys_file" in (ARTIFACTS / "bad-keys.log").read_text()
