"""The prototype's background-task API: send_text, poll, list."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx


async def wait_for_task(client: httpx.AsyncClient, task_id: str, route: str) -> dict[str, Any]:
    for _ in range(600):
        reply = await client.get(f"/{route}/{task_id}")
        assert reply.status_code == 200, reply.text
        body: dict[str, Any] = reply.json()
        assert body["status"] in {"queued", "running", "done", "failed"}
        if body["status"] in {"done", "failed"}:
            return body
        await asyncio.sleep(0.05)
    raise AssertionError(f"task {task_id} did not finish in 30 s")


async def test_send_text_then_poll_until_done(client: httpx.AsyncClient) -> None:
    reply = await client.post(
        "/send_text", json={"prompt": "What is the capital of France?", "temperature": 0}
    )
    assert reply.status_code == 202
    task_id = reply.json()["task_id"]
    assert reply.json()["status"] in {"queued", "running"}
    done = await wait_for_task(client, task_id, "get_task_status")
    assert done["status"] == "done"
    assert "Paris" in done["result"]["text"]
    assert done["result"]["usage"]["completion_tokens"] > 0
    polled = (await client.get(f"/poll_task_status/{task_id}")).json()
    assert polled == done


async def test_tasks_are_listed_newest_first_and_paginated(client: httpx.AsyncClient) -> None:
    ids = []
    for i in range(3):
        reply = await client.post("/send_text", json={"prompt": f"Say {i}.", "max_tokens": 4})
        ids.append(reply.json()["task_id"])
    for task_id in ids:
        await wait_for_task(client, task_id, "poll_task_status")
    # other tests add tasks to this server too: check the order, not the neighbours
    pages = []
    for page in (1, 2, 3):
        listing = (await client.get("/tasks/", params={"per_page": 2, "page": page})).json()
        assert listing["page"] == page and listing["per_page"] == 2 and len(listing["tasks"]) <= 2
        pages.append(listing)
    assert pages[0]["total"] >= 3
    every = [t for p in pages for t in p["tasks"]]
    assert len({t["task_id"] for t in every}) == len(every)  # pages do not overlap
    times = [t["created_at"] for t in every]
    assert times == sorted(times, reverse=True)
    ours = [t for t in every if t["task_id"] in ids]
    assert [t["task_id"] for t in ours] == ids[::-1]  # newest first
    assert all(t["status"] == "done" for t in ours)


async def test_unknown_task_is_404(client: httpx.AsyncClient) -> None:
    reply = await client.get("/get_task_status/not-a-task")
    assert reply.status_code == 404
    assert "/send_text" in reply.json()["error"]["message"]
