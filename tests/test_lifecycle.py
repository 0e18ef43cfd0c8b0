"""Process-level behaviour, each on a server of its own: kill -9, SIGTERM, keys, logs."""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from server.launcher import free_port, started
from server.tasks import RESTART_REASON
from tests.conftest import ARTIFACTS, REPO, config_variant, serve_command

LONG = {"prompt": "Write a very long essay about the sea.", "max_tokens": 3000}


def start(config: Path, name: str, *args: str, env: dict[str, str] | None = None) -> Any:
    port = free_port()
    return started(
        serve_command(config, port, *args), port, ARTIFACTS / f"{name}.log", REPO, env=env
    )


async def status_of(client: httpx.AsyncClient, task_id: str) -> dict[str, Any]:
    record: dict[str, Any] = (await client.get(f"/get_task_status/{task_id}")).json()
    return record


async def test_tasks_survive_kill_9(test_config: Path, tmp_path: Path) -> None:
    config = config_variant(test_config, tmp_path)
    with start(config, "kill9-first", "--max-batch-size", "1") as live:
        async with httpx.AsyncClient(base_url=live.url, timeout=60) as client:
            done_id = (
                await client.post("/send_text", json={"prompt": "Say hi.", "max_tokens": 4})
            ).json()["task_id"]
            while (await status_of(client, done_id))["status"] != "done":
                await asyncio.sleep(0.05)
            running_id = (await client.post("/send_text", json=LONG)).json()["task_id"]
            queued = [
                (await client.post("/send_text", json=LONG)).json()["task_id"] for _ in range(2)
            ]
            while (await status_of(client, running_id))["status"] != "running":
                await asyncio.sleep(0.05)
            for task_id in queued:
                assert (await status_of(client, task_id))["status"] == "queued"
        live.process.send_signal(signal.SIGKILL)
        live.process.wait(10)
    with start(config, "kill9-second") as live:
        async with httpx.AsyncClient(base_url=live.url, timeout=60) as client:
            done = await status_of(client, done_id)
            assert done["status"] == "done" and done["result"]["text"]
            for task_id in [running_id, *queued]:
                record = await status_of(client, task_id)
                assert record["status"] == "failed", record
                assert record["error"] == RESTART_REASON
                assert record["request"]["prompt"] == LONG["prompt"]  # there to resend
            listing = (await client.get("/tasks/")).json()
            assert listing["total"] == 4


async def test_sigterm_drains_then_exits_0(test_config: Path, tmp_path: Path) -> None:
    config = config_variant(test_config, tmp_path)
    with start(config, "sigterm") as live:
        async with httpx.AsyncClient(base_url=live.url, timeout=60) as client:
            body = {
                "prompt": "Count from one to one hundred.",
                "max_tokens": 150,
                "temperature": 0,
                "stream": True,
            }
            async with client.stream("POST", "/generate", json=body) as stream:
                lines = stream.aiter_lines()
                assert (await anext(lines)).startswith("data: ")
                live.process.send_signal(signal.SIGTERM)
                await asyncio.sleep(0.3)
                refused = await client.post("/generate", json={"prompt": "Hi"})
                assert refused.status_code == 503
                assert "shutting down" in refused.json()["error"]["message"]
                assert (await client.get("/health_check")).status_code == 200
                rest = [line async for line in lines if line.startswith("data: ")]
            assert rest[-1] == "data: [DONE]"
            final = orjson.loads(rest[-2][6:])
            assert final["finish_reason"] in ("length", "stop")
        assert live.process.wait(30) == 0


async def test_api_keys_and_json_request_logs(test_config: Path, tmp_path: Path) -> None:
    config = config_variant(test_config, tmp_path, log_format="json")
    log_path = ARTIFACTS / "keys.log"
    log_path.unlink(missing_ok=True)
    secret_prompt = "The secret word is pelican."
    with start(config, "keys", env={"EDGE_LLM_API_KEYS": "key-one,key-two"}) as live:
        async with httpx.AsyncClient(base_url=live.url, timeout=60) as client:
            body = {"prompt": secret_prompt, "max_tokens": 3}
            missing = await client.post("/generate", json=body)
            wrong = await client.post("/generate", json=body, headers={"X-API-Key": "nope"})
            for reply in (missing, wrong):
                assert reply.status_code == 401
                assert reply.json()["error"]["code"] == 401
                assert "API key" in reply.json()["error"]["message"]
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
    time.sleep(0.1)
    text = log_path.read_text()
    assert secret_prompt not in text and "pelican" not in text  # prompts are not logged
    lines = [orjson.loads(line) for line in text.splitlines() if line.startswith("{")]
    access = [line for line in lines if line.get("request_id") == "log-me"]
    assert len(access) == 1, lines[-5:]
    entry = access[0]
    assert entry["status"] == 200 and entry["path"] == "/generate"
    assert entry["model"] and entry["completion_tokens"] == 3 and entry["ms"] > 0


@pytest.mark.parametrize("bad", ["not-a-file"])
def test_missing_keys_file_stops_start_up(test_config: Path, tmp_path: Path, bad: str) -> None:
    config = config_variant(test_config, tmp_path, api_keys_file=bad)
    with pytest.raises(RuntimeError, match="exited"), start(config, "bad-keys"):
        pass
    assert "api_keys_file" in (ARTIFACTS / "bad-keys.log").read_text()
