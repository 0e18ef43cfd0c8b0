"""Fault paths on a live server, provoked through the fault-injection hook.

The server here starts with EDGE_LLM_FAULTS set (so POST /debug/faults exists)
and two sequence slots per model, so a full batch is easy to make. Each test
checks that every request got its documented answer, then that the server
serves normally afterwards.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import (
    SPECULATIVE_MODELS,
    arm_fault,
    armed_faults,
    config_variant,
    running_server,
    slow_steps,
)

LONG = {"prompt": "Write a very long essay about the sea.", "max_tokens": 2000, "temperature": 0}
SHORT = {"prompt": "Name three colours.", "max_tokens": 12, "temperature": 0}


@pytest.fixture(scope="module")
def faulty_server(test_config: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    config = config_variant(test_config, tmp_path_factory.mktemp("faulty"), max_batch_size=2)
    with running_server(config, name="faulty-server", env={"EDGE_LLM_FAULTS": ""}) as url:
        yield url


@pytest.fixture
async def client(faulty_server: str) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=faulty_server, timeout=120) as c:
        yield c
        await c.post("/debug/faults", json={"disarm": None})


async def serves(client: httpx.AsyncClient, model: str | None = None) -> str:
    reply = await client.post("/generate", json={**SHORT, "model_name": model})
    assert reply.status_code == 200, reply.text
    text: str = reply.json()["text"]
    return text


async def health(client: httpx.AsyncClient) -> dict[str, Any]:
    body: dict[str, Any] = (await client.get("/health_check")).json()
    return body


def assert_error(reply: httpx.Response, status: int, kind: str) -> None:
    assert reply.status_code == status, reply.text
    error = reply.json()["error"]
    assert error["code"] == status and error["type"] == kind and error["message"]


async def test_executor_crash_answers_503_then_reloads(client: httpx.AsyncClient) -> None:
    await serves(client)
    await arm_fault(client, "executor_crash")
    reply = await client.post("/generate", json=SHORT)
    assert_error(reply, 503, "server_unavailable_error")
    assert reply.headers["Retry-After"] == "1"
    assert "executor failed" in reply.json()["error"]["message"]
    await serves(client)  # the next request loads the model afresh


async def test_stream_sees_a_crash_as_a_typed_503_frame(client: httpx.AsyncClient) -> None:
    await serves(client)
    await arm_fault(client, "executor_crash")
    async with client.stream("POST", "/generate", json={**SHORT, "stream": True}) as reply:
        lines = [line async for line in reply.aiter_lines() if line.startswith("data: {")]
    assert '"type":"server_unavailable_error"' in lines[-1] and '"code":503' in lines[-1]
    await serves(client)


async def test_a_step_that_raises_still_answers_what_it_finished(
    client: httpx.AsyncClient,
) -> None:
    await serves(client)
    await arm_fault(client, "step_crash")
    # max_tokens 1: the request finishes in the very step that then raises
    started = time.monotonic()
    reply = await client.post("/generate", json={**SHORT, "max_tokens": 1, "timeout": 60})
    assert reply.status_code == 200, reply.text
    # answered by the step, not rescued by the backstop at its 60 s deadline
    assert time.monotonic() - started < 30
    assert reply.json()["usage"]["completion_tokens"] == 1
    assert "step_crash" not in await armed_faults(client)
    await serves(client)


async def test_decode_failure_fails_that_step_only(client: httpx.AsyncClient) -> None:
    expected = await serves(client)
    await arm_fault(client, "decode_error")
    reply = await client.post("/generate", json=SHORT)
    assert_error(reply, 500, "server_error")
    assert "llama_decode returned" in reply.json()["error"]["message"]
    assert await serves(client) == expected


async def test_a_failed_admission_fails_that_request_only(client: httpx.AsyncClient) -> None:
    """Placing a constrained prompt raises after its grammar and slot were taken: that
    request is a 500, the executor is not reloaded, and both slots serve a full batch."""
    expected = await serves(client)
    await arm_fault(client, "place_error")
    body = {**SHORT, "json_schema": {"type": "object", "properties": {"a": {"type": "integer"}}}}
    reply = await client.post("/generate", json=body)
    assert_error(reply, 500, "server_error")
    # a 500 for this request, not the 503 of a dead executor
    assert "injected fault: place_error" in reply.json()["error"]["message"]
    both = await asyncio.gather(*(client.post("/generate", json=SHORT) for _ in range(2)))
    assert [r.json()["text"] for r in both] == [expected, expected]


async def test_no_kv_room_defers_half_the_step(client: httpx.AsyncClient) -> None:
    prompts = ["Name three colours.", "Name three rivers."]
    alone = [
        (await client.post("/generate", json={**SHORT, "prompt": p})).json()["text"]
        for p in prompts
    ]
    await arm_fault(client, "kv_full")  # fires at the first step that holds both sequences
    replies = await asyncio.gather(
        *(client.post("/generate", json={**SHORT, "prompt": p}) for p in prompts)
    )
    assert [r.status_code for r in replies] == [200, 200]
    assert "kv_full" not in await armed_faults(client)
    assert [r.json()["text"] for r in replies] == alone


async def test_a_sampling_error_fails_that_request_only(client: httpx.AsyncClient) -> None:
    """docs/reliability.md's "an error while sampling or detokenizing fails that request only":
    its neighbour in the same steps finishes as it would alone."""
    prompts = ["Name three colours.", "Name three rivers."]
    body = {**SHORT, "max_tokens": 24}
    alone = [await client.post("/generate", json={**body, "prompt": p}) for p in prompts]
    async with slow_steps(client):  # both still decoding when the fault is armed
        replies = [
            asyncio.ensure_future(client.post("/generate", json={**body, "prompt": p}))
            for p in prompts
        ]
        await wait_for(lambda h: h["running"] == 2, client)
        await arm_fault(client, "sample_error")  # one shot: the next sequence sampled
        await wait_for_faults(client, lambda names: "sample_error" not in names)
        answers = await asyncio.gather(*replies)
    assert sorted(r.status_code for r in answers) == [200, 500], [r.text for r in answers]
    ok = next(i for i, r in enumerate(answers) if r.status_code == 200)
    failed = answers[1 - ok]
    assert_error(failed, 500, "server_error")
    assert "injected fault: sample_error" in failed.json()["error"]["message"]
    assert answers[ok].json()["text"] == alone[ok].json()["text"]
    # all of it, as alone (the model may end before 24 tokens on some CPUs)
    tokens = answers[ok].json()["usage"]["completion_tokens"]
    assert tokens == alone[ok].json()["usage"]["completion_tokens"]
    assert await serves(client)


@pytest.mark.parametrize("shots", [1, 2], ids=["batched-pick", "batched-and-one-row"])
async def test_a_failed_batched_pick_is_retried_row_by_row(
    client: httpx.AsyncClient, shots: int
) -> None:
    """The batched pick of a step's tokens fails: each row is picked on its own. One shot:
    both requests finish as alone. Two shots (the batched pick, then the first row): that
    row's request fails, its neighbour finishes as alone."""
    prompts = ["Name three colours.", "Name three rivers."]
    body = {**SHORT, "max_tokens": 24}
    alone = [await client.post("/generate", json={**body, "prompt": p}) for p in prompts]
    async with slow_steps(client):  # both decoding in the same steps when the fault fires
        replies = [
            asyncio.ensure_future(client.post("/generate", json={**body, "prompt": p}))
            for p in prompts
        ]
        await wait_for(lambda h: h["running"] == 2, client)
        await arm_fault(client, "pick_error", times=shots)
        await wait_for_faults(client, lambda names: "pick_error" not in names)
        answers = await asyncio.gather(*replies)
    ok = [i for i, r in enumerate(answers) if r.status_code == 200]
    assert len(ok) == 3 - shots, [r.text for r in answers]
    for i in ok:
        assert answers[i].json()["text"] == alone[i].json()["text"]
    if shots == 2:
        failed = answers[1 - ok[0]]
        assert_error(failed, 500, "server_error")
        assert "injected fault: pick_error" in failed.json()["error"]["message"]
    assert await serves(client)


async def test_draft_failure_resyncs_the_draft_model(client: httpx.AsyncClient) -> None:
    model = SPECULATIVE_MODELS[1]  # target + Q2_K draft model
    body = {**SHORT, "model_name": model, "max_tokens": 48}
    plain = await client.post("/generate", json={**body, "speculative": False})
    await arm_fault(client, "draft_error")
    reply = await client.post("/generate", json=body)
    assert reply.status_code == 200
    assert "draft_error" not in await armed_faults(client)
    assert reply.json()["text"] == plain.json()["text"]
    # the draft model keeps drafting after the failure (its cache was rebuilt)
    assert reply.json()["speculative"]["accepted_tokens"] > 0


async def test_wedged_executor_is_answered_by_the_backstop(client: httpx.AsyncClient) -> None:
    await serves(client)
    await arm_fault(client, "step_delay", times=1, seconds=10)
    reply = await client.post("/generate", json={**LONG, "timeout": 1})
    assert_error(reply, 504, "timeout_error")
    # the server's clock: deadline + 1 s backstop grace (~2 s), not the 10 s step
    assert elapsed_ms(reply) < 6000, reply.json()
    await serves(client)


async def test_request_holding_an_unloaded_model_gets_503(client: httpx.AsyncClient) -> None:
    await serves(client)
    await arm_fault(client, "prepare_delay", seconds=4)
    stale = asyncio.create_task(client.post("/generate", json=SHORT))
    # the fault has fired: the request holds the loaded model and sleeps before submitting
    await wait_for_faults(client, lambda names: "prepare_delay" not in names)
    await arm_fault(client, "executor_crash")
    assert (await client.post("/generate", json=SHORT)).status_code == 503
    await serves(client)  # reloads: the old batcher is stopped
    reply = await asyncio.wait_for(stale, 30)
    assert_error(reply, 503, "server_unavailable_error")
    await serves(client)


async def test_queued_request_leaves_at_its_deadline(client: httpx.AsyncClient) -> None:
    await serves(client)
    async with slow_steps(client):  # the slots stay taken 30 s, however fast the machine
        hogs = [asyncio.create_task(client.post("/generate", json={**LONG, "timeout": 30}))]
        hogs.append(asyncio.create_task(client.post("/generate", json={**LONG, "timeout": 30})))
        await wait_for(lambda h: h["running"] == 2, client)
        started = time.monotonic()
        reply = await client.post("/generate", json={**SHORT, "timeout": 1.5})
        assert_error(reply, 504, "timeout_error")
        assert time.monotonic() - started < 15  # not when a slot frees, 30 s later
        # docs/reliability.md's "within 0.25 s", on the server's own clock (0.1 s was
        # missed by 0.4 ms on a loaded 2-core CI box)
        assert 1500 <= elapsed_ms(reply) < 1750, reply.json()
        assert (await health(client))["running"] == 2  # no slot had freed
        for hog in hogs:
            hog.cancel()
    await wait_for(lambda h: h["running"] == 0, client)


def elapsed_ms(reply: httpx.Response) -> float:
    """From the request's arrival to its end, as the server timed it (a 504's partial)."""
    total: float = reply.json()["error"]["partial"]["timings"]["total_ms"]
    return total


async def test_queued_task_cancel_answers_cancelled(client: httpx.AsyncClient) -> None:
    async with slow_steps(client):  # the slots stay taken 60 s, however fast the machine
        hogs = [await client.post("/send_text", json={**LONG, "timeout": 60}) for _ in range(2)]
        await wait_for(lambda h: h["running"] == 2, client)
        queued = (await client.post("/send_text", json=SHORT)).json()["task_id"]
        assert (await client.get(f"/get_task_status/{queued}")).json()["status"] == "queued"
        started = time.monotonic()
        reply = await client.delete(f"/tasks/{queued}")
        # the reply itself says cancelled: at once, not when a slot frees (60 s)
        assert reply.status_code == 200 and reply.json()["status"] == "cancelled"
        assert time.monotonic() - started < 15
        assert (await health(client))["running"] == 2
    for hog in hogs:
        assert (await client.delete(f"/tasks/{hog.json()['task_id']}")).json()["status"] == (
            "cancelled"
        )
    await wait_for(lambda h: h["running"] == 0 and h["waiting"] == 0, client)


async def test_disconnected_waiter_leaves_the_queue(client: httpx.AsyncClient) -> None:
    async with slow_steps(client):  # the slots stay taken 60 s, however fast the machine
        hogs = [asyncio.create_task(client.post("/generate", json={**LONG, "timeout": 60}))]
        hogs.append(asyncio.create_task(client.post("/generate", json={**LONG, "timeout": 60})))
        await wait_for(lambda h: h["running"] == 2, client)
        waiter = asyncio.create_task(client.post("/generate", json=SHORT))
        await wait_for(lambda h: h["waiting"] == 1, client)
        waiter.cancel()  # the client goes away while queued
        # it leaves now, with both slots still taken (not when one frees, 60 s later)
        body = await wait_for(lambda h: h["waiting"] == 0, client, within=15)
        assert body["running"] == 2
    for hog in hogs:
        hog.cancel()
    await wait_for(lambda h: h["running"] == 0, client)


async def test_a_failing_load_is_tried_once_then_remembered(client: httpx.AsyncClient) -> None:
    body = {**SHORT, "model_name": "corrupt-model"}
    replies = await asyncio.gather(*(client.post("/generate", json=body) for _ in range(8)))
    for reply in replies:
        assert_error(reply, 503, "server_unavailable_error")
        assert int(reply.headers["Retry-After"]) >= 1
    model = (await health(client))["models"]["corrupt-model"]
    assert model["load_attempts"] == 1 and "not a valid GGUF" in model["last_error"]


async def test_a_slow_task_store_does_not_stall_streams(client: httpx.AsyncClient) -> None:
    await serves(client)
    task_id = (await client.post("/send_text", json={**SHORT, "max_tokens": 1})).json()["task_id"]
    # each store operation takes 2 s: a stream that waited on one would show a 2 s gap,
    # which no step of a short stream takes, even on a loaded machine
    delay = 2.0
    await arm_fault(client, "store_delay", times=None, seconds=delay)
    gaps: list[float] = []
    streaming = asyncio.Event()
    num_store_reads = 0

    async def stream() -> None:
        body = {**SHORT, "max_tokens": 40, "stream": True}
        last = None
        async with client.stream("POST", "/generate", json=body) as reply:
            async for line in reply.aiter_lines():
                if line.startswith("data: {"):
                    streaming.set()
                    now = time.monotonic()
                    if last is not None:
                        gaps.append(now - last)
                    last = now

    async def store_traffic() -> None:  # reads only: no decode work joins the stream's steps
        nonlocal num_store_reads
        await streaming.wait()
        while not streamed.done():  # store reads in flight for the stream's whole life
            await asyncio.gather(
                client.get("/tasks/"),
                client.get(f"/get_task_status/{task_id}"),
            )
            num_store_reads += 2

    async with slow_steps(client, 0.02):  # 40 steps of 20 ms or more: overlapping reads
        streamed = asyncio.ensure_future(stream())
        await asyncio.gather(streamed, store_traffic())
    assert len(gaps) > 10 and num_store_reads >= 2
    assert max(gaps) < delay / 2, sorted(gaps)[-3:]


async def wait_for_faults(client: httpx.AsyncClient, condition: Any) -> None:
    """Poll /debug/faults until ``condition(armed names)`` holds; fail after 30 s."""
    deadline = time.monotonic() + 30
    while not condition(await armed_faults(client)):
        assert time.monotonic() < deadline, "the fault did not fire within 30 s"
        await asyncio.sleep(0.05)


async def wait_for(
    condition: Any, client: httpx.AsyncClient, within: float = 30.0
) -> dict[str, Any]:
    """Poll /health_check until ``condition(body)`` holds; fail after ``within`` s."""
    deadline = time.monotonic() + within
    while True:
        body = await health(client)
        if condition(body):
            return body
        assert time.monotonic() < deadline, f"condition not met within {within} s: {body}"
        await asyncio.sleep(0.05)
