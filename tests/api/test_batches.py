"""OpenAI's Files and Batch APIs through the official ``openai`` client, on a real server.

A batch's lines run through the server's own routes, so each answer is what the route
gives the same body (greedy text compared); a batch survives a ``kill -9``, each line
answered once.
"""

from __future__ import annotations

import signal
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any, Literal

import httpx
import orjson
import pytest
from openai import AsyncOpenAI, BadRequestError, NotFoundError
from openai.types import Batch, CreateEmbeddingResponse, FileObject
from openai.types.chat import ChatCompletion
from openai.types.responses import Response as ResponseObject

from tests.conftest import (
    DEFAULT_MODEL,
    config_variant,
    health,
    live_server,
    running_server,
    wait_until,
)

CHAT = {"model": DEFAULT_MODEL, "max_tokens": 8, "temperature": 0}
ENDPOINT_BODIES: dict[str, dict[str, Any]] = {
    "/v1/chat/completions": {**CHAT, "messages": [{"role": "user", "content": "Say hi"}]},
    "/v1/completions": {"model": DEFAULT_MODEL, "prompt": "Once upon", "max_tokens": 6},
    "/v1/embeddings": {"model": DEFAULT_MODEL, "input": "a sentence"},
    "/v1/responses": {"model": DEFAULT_MODEL, "input": "Say hi", "max_output_tokens": 8},
}
REPLY_TYPES: dict[str, Any] = {
    "/v1/chat/completions": ChatCompletion,
    "/v1/completions": None,  # checked as JSON below: the client's Completion type is loose
    "/v1/embeddings": CreateEmbeddingResponse,
    "/v1/responses": ResponseObject,
}


def jsonl(url: str, bodies: list[dict[str, Any]]) -> bytes:
    lines = [
        {"custom_id": f"req-{i}", "method": "POST", "url": url, "body": b}
        for i, b in enumerate(bodies)
    ]
    return b"\n".join(orjson.dumps(line) for line in lines) + b"\n"


@pytest.fixture(scope="module")
def server(test_config: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    folder = tmp_path_factory.mktemp("batches")
    limits = {"max_body_bytes": 64 << 10, "max_file_bytes": 256 << 10}
    config = config_variant(test_config, folder, batch_concurrency=2, **limits)
    with running_server(config, name="batches") as url:
        yield url


@pytest.fixture
async def oai(server: str) -> AsyncIterator[AsyncOpenAI]:
    async with AsyncOpenAI(base_url=server + "/v1", api_key="unused", max_retries=0) as client:
        yield client


async def finished(oai: AsyncOpenAI, batch_id: str, within: float = 120) -> Batch:
    final = ("completed", "failed", "expired", "cancelled")
    return await wait_until(
        lambda: oai.batches.retrieve(batch_id), lambda b: b.status in final, within, batch_id
    )


async def lines_of(oai: AsyncOpenAI, file_id: str | None) -> list[dict[str, Any]]:
    assert file_id is not None
    content = await oai.files.content(file_id)
    return [orjson.loads(line) for line in content.content.splitlines()]


async def test_a_chat_batch_answers_each_line_as_the_route_does(oai: AsyncOpenAI) -> None:
    prompts = ["Say hi", "Name a color", "Count to three", "Name a fruit"]
    bodies = [{**CHAT, "messages": [{"role": "user", "content": p}]} for p in prompts]
    bodies.append({**CHAT, "messages": [], "max_tokens": 0})  # the route's 400: the error file
    url: Literal["/v1/chat/completions"] = "/v1/chat/completions"
    upload = await oai.files.create(file=("in.jsonl", jsonl(url, bodies)), purpose="batch")
    assert FileObject.model_validate(upload.model_dump()).purpose == "batch"
    batch = await oai.batches.create(
        input_file_id=upload.id, endpoint=url, completion_window="24h", metadata={"job": "t"}
    )
    assert batch.status == "in_progress" and batch.metadata == {"job": "t"}
    batch = await finished(oai, batch.id)
    assert batch.status == "completed", batch
    assert batch.request_counts is not None
    assert (batch.request_counts.total, batch.request_counts.completed) == (5, 4)
    assert batch.request_counts.failed == 1
    output = await lines_of(oai, batch.output_file_id)
    assert [line["custom_id"] for line in output] == ["req-0", "req-1", "req-2", "req-3"]
    for line, body in zip(output, bodies, strict=False):
        assert line["response"]["status_code"] == 200 and line["error"] is None
        reply = ChatCompletion.model_validate(line["response"]["body"])
        direct = await oai.chat.completions.create(**body)  # type: ignore[call-overload]
        assert reply.choices[0].message.content == direct.choices[0].message.content
    [error] = await lines_of(oai, batch.error_file_id)
    assert error["custom_id"] == "req-4" and error["response"]["status_code"] == 400
    assert "message" in error["response"]["body"]["error"]


@pytest.mark.parametrize("url", [u for u in ENDPOINT_BODIES if u != "/v1/chat/completions"])
async def test_every_batch_endpoint(oai: AsyncOpenAI, url: str) -> None:
    data = jsonl(url, [ENDPOINT_BODIES[url]] * 2)
    upload = await oai.files.create(file=("in.jsonl", data), purpose="batch")
    batch = await oai.batches.create(
        input_file_id=upload.id,
        endpoint=url,  # type: ignore[arg-type]
        completion_window="24h",
    )
    batch = await finished(oai, batch.id)
    assert batch.status == "completed" and batch.error_file_id is None, batch
    output = await lines_of(oai, batch.output_file_id)
    assert [line["custom_id"] for line in output] == ["req-0", "req-1"]
    for line in output:
        body = line["response"]["body"]
        if REPLY_TYPES[url] is not None:
            REPLY_TYPES[url].model_validate(body)
        else:
            assert body["object"] == "text_completion" and body["choices"][0]["text"]
        if url == "/v1/responses":  # a batch's responses are not stored unless asked
            with pytest.raises(NotFoundError):
                await oai.responses.retrieve(body["id"])


async def test_a_malformed_line_is_a_400_that_names_it(oai: AsyncOpenAI) -> None:
    good = orjson.dumps({"custom_id": "a", "url": "/v1/embeddings", "body": {"input": "x"}})
    cases = {
        b"{not json": "line 2: not valid JSON",
        orjson.dumps({"custom_id": "a", "url": "/v1/embeddings", "body": {}}): "used twice",
        orjson.dumps({"custom_id": "b", "url": "/v1/images", "body": {}}): "line 2: url must",
        orjson.dumps({"custom_id": "c", "url": "/v1/embeddings"}): "line 2: body must",
    }
    for bad, message in cases.items():
        with pytest.raises(BadRequestError, match=message):
            await oai.files.create(file=("in.jsonl", good + b"\n" + bad), purpose="batch")
    upload = await oai.files.create(file=("in.jsonl", good), purpose="batch")
    with pytest.raises(BadRequestError, match="line 1: url '/v1/embeddings' differs"):
        await oai.batches.create(
            input_file_id=upload.id, endpoint="/v1/completions", completion_window="24h"
        )


async def test_files_are_listed_read_and_deleted(oai: AsyncOpenAI, server: str) -> None:
    data = jsonl("/v1/embeddings", [ENDPOINT_BODIES["/v1/embeddings"]])
    upload = await oai.files.create(file=("mine.jsonl", data), purpose="batch")
    assert (await oai.files.retrieve(upload.id)).filename == "mine.jsonl"
    assert upload.id in [f.id async for f in oai.files.list(purpose="batch")]
    assert (await oai.files.content(upload.id)).content == data
    assert (await oai.files.delete(upload.id)).deleted
    async with httpx.AsyncClient(base_url=server) as client:
        assert (await client.get(f"/v1/files/{upload.id}")).status_code == 404
        plain = await client.post("/v1/files", json={"purpose": "batch"})
        assert plain.status_code == 400 and "multipart" in plain.json()["error"]["message"]


async def test_a_cancelled_batch_keeps_what_was_answered(oai: AsyncOpenAI) -> None:
    body = {**CHAT, "max_tokens": 48, "ignore_eos": True}
    bodies = [{**body, "messages": [{"role": "user", "content": f"Story {i}"}]} for i in range(30)]
    url: Literal["/v1/chat/completions"] = "/v1/chat/completions"
    upload = await oai.files.create(file=("in.jsonl", jsonl(url, bodies)), purpose="batch")
    batch = await oai.batches.create(input_file_id=upload.id, endpoint=url, completion_window="24h")
    await wait_until(
        lambda: oai.batches.retrieve(batch.id),
        lambda b: b.request_counts is not None and b.request_counts.completed >= 1,
        what="a first answer",
    )
    cancelled = await oai.batches.cancel(batch.id)
    assert cancelled.status in ("cancelling", "cancelled")
    batch = await finished(oai, batch.id)
    assert batch.status == "cancelled" and batch.cancelled_at is not None
    assert batch.request_counts is not None and batch.request_counts.completed < 30
    output = await lines_of(oai, batch.output_file_id)
    assert len(output) == batch.request_counts.completed
    assert batch.id in [b.id async for b in oai.batches.list(limit=5)]


@pytest.mark.parametrize("stop", [signal.SIGKILL, signal.SIGTERM], ids=["kill-9", "sigterm"])
async def test_a_batch_survives_kill_9_each_line_answered_once(
    test_config: Path, tmp_path: Path, stop: signal.Signals
) -> None:
    """Killed, or drained by SIGTERM (lines in flight finish, no new one starts), the
    batch completes after the restart with each line answered once."""
    config = config_variant(test_config, tmp_path, batch_concurrency=2)
    body = {**CHAT, "max_tokens": 24, "ignore_eos": True}
    bodies = [{**body, "messages": [{"role": "user", "content": f"Tale {i}"}]} for i in range(24)]
    url: Literal["/v1/chat/completions"] = "/v1/chat/completions"
    with live_server(config, name=f"batch-{stop.name}") as live:
        async with AsyncOpenAI(base_url=live.url + "/v1", api_key="-", max_retries=0) as oai:
            upload = await oai.files.create(file=("in.jsonl", jsonl(url, bodies)), purpose="batch")
            batch = await oai.batches.create(
                input_file_id=upload.id, endpoint=url, completion_window="24h"
            )
            before = await wait_until(
                lambda: oai.batches.retrieve(batch.id),
                lambda b: b.request_counts is not None and b.request_counts.completed >= 2,
                what="two answers",
            )
            live.process.send_signal(stop)
        assert live.process.wait(60) == (0 if stop == signal.SIGTERM else -signal.SIGKILL)
    assert before.request_counts is not None and before.request_counts.completed < 24
    with live_server(config, name=f"batch-{stop.name}-after") as live:
        async with AsyncOpenAI(base_url=live.url + "/v1", api_key="-", max_retries=0) as oai:
            batch = await finished(oai, batch.id, within=300)
            assert batch.status == "completed" and batch.error_file_id is None, batch
            output = await lines_of(oai, batch.output_file_id)
            ids = [line["custom_id"] for line in output]
            assert ids == [f"req-{i}" for i in range(24)]  # each once, in the input's order
            texts = {}
            for line in output:
                reply = ChatCompletion.model_validate(line["response"]["body"])
                texts[line["custom_id"]] = reply.choices[0].message.content
            # a line cut short by the kill and run again gives the greedy text once more
            last = {k: v for k, v in bodies[-1].items() if k != "ignore_eos"}
            direct = await oai.chat.completions.create(  # type: ignore[call-overload]
                **last, extra_body={"ignore_eos": True}
            )
            assert texts["req-23"] == direct.choices[0].message.content


async def test_a_batch_keeps_one_line_in_flight_while_interactive_requests_run(
    oai: AsyncOpenAI, server: str
) -> None:
    body = {**CHAT, "max_tokens": 32, "ignore_eos": True}
    bodies = [{**body, "messages": [{"role": "user", "content": f"Poem {i}"}]} for i in range(40)]
    url: Literal["/v1/chat/completions"] = "/v1/chat/completions"
    upload = await oai.files.create(file=("in.jsonl", jsonl(url, bodies)), purpose="batch")
    batch = await oai.batches.create(input_file_id=upload.id, endpoint=url, completion_window="24h")
    async with httpx.AsyncClient(base_url=server, timeout=120) as client:
        running = lambda: health(client)  # noqa: E731
        await wait_until(running, lambda h: h["running"] == 2, what="two batch lines running")
        interactive = {**body, "max_tokens": 400, "stream": True}
        interactive["messages"] = [{"role": "user", "content": "Tell a long story."}]
        async with client.stream("POST", "/v1/chat/completions", json=interactive) as reply:
            lines = reply.aiter_lines()
            await anext(lines)
            # the lines in flight end; then one batch line runs beside the stream
            await wait_until(running, lambda h: h["running"] == 2, what="one line + the stream")
            for _ in range(5):
                assert (await health(client))["running"] <= 2
                await anext(lines)
    await oai.batches.cancel(batch.id)


async def test_uploads_have_their_own_size_limit(oai: AsyncOpenAI, server: str) -> None:
    line = orjson.dumps({"custom_id": "x", "url": "/v1/embeddings", "body": {"input": "x"}})
    lines = [line.replace(b'"x"', f'"{i}"'.encode(), 1) for i in range(2000)]
    data = b"\n".join(lines)  # ~120 KB: over max_body_bytes, under max_file_bytes
    assert 64 << 10 < len(data) < 256 << 10
    assert (await oai.files.create(file=("big.jsonl", data), purpose="batch")).bytes == len(data)
    async with httpx.AsyncClient(base_url=server) as client:
        files = {"file": ("huge.jsonl", data * 3)}
        reply = await client.post("/v1/files", files=files, data={"purpose": "batch"})
        assert reply.status_code == 413, reply.text
        chat = await client.post("/v1/chat/completions", content=b" " * (100 << 10))
        assert chat.status_code == 413  # the other routes keep max_body_bytes


async def test_a_line_cut_short_task_max_attempts_times_is_answered_with_an_error(
    test_config: Path, tmp_path: Path
) -> None:
    """One line at a time, one attempt allowed: the line running at the kill is not run
    again but answered as failed; every other line runs."""
    config = config_variant(test_config, tmp_path, batch_concurrency=1, task_max_attempts=1)
    body = {**CHAT, "max_tokens": 24, "ignore_eos": True}
    bodies = [{**body, "messages": [{"role": "user", "content": f"Ode {i}"}]} for i in range(6)]
    url: Literal["/v1/chat/completions"] = "/v1/chat/completions"
    with live_server(config, name="batch-spent") as live:
        async with AsyncOpenAI(base_url=live.url + "/v1", api_key="-", max_retries=0) as oai:
            upload = await oai.files.create(file=("in.jsonl", jsonl(url, bodies)), purpose="batch")
            batch = await oai.batches.create(
                input_file_id=upload.id, endpoint=url, completion_window="24h"
            )
            await wait_until(
                lambda: oai.batches.retrieve(batch.id),
                lambda b: b.request_counts is not None and b.request_counts.completed >= 1,
                what="a first answer",
            )
            live.process.send_signal(signal.SIGKILL)
        live.process.wait(10)
    with live_server(config, name="batch-spent-after") as live:
        async with AsyncOpenAI(base_url=live.url + "/v1", api_key="-", max_retries=0) as oai:
            batch = await finished(oai, batch.id)
            assert batch.status == "completed" and batch.request_counts is not None
            assert (batch.request_counts.completed, batch.request_counts.failed) == (5, 1)
            [spent] = await lines_of(oai, batch.error_file_id)
            assert spent["response"] is None and "cut short" in spent["error"]["message"]
