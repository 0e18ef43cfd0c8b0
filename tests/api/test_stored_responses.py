"""Stored responses through the official openai client: ``store``, ``previous_response_id``,
``GET`` / ``DELETE``, ``background`` with polling and cancel."""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

import openai
import pytest
from openai import AsyncOpenAI
from openai.types.responses import Response

from tests.conftest import DEFAULT_MODEL, config_variant, live_server, wait_until

GREEDY: dict[str, Any] = {"model": DEFAULT_MODEL, "temperature": 0}
QUESTION = "Tell me one fact about the Moon."


async def settled(oai: AsyncOpenAI, response_id: str) -> Response:
    return await wait_until(
        lambda: oai.responses.retrieve(response_id),
        lambda r: r.status not in ("queued", "in_progress"),
        what=f"{response_id} ended",
    )


async def test_a_response_is_stored_by_default_and_deleted(oai: AsyncOpenAI) -> None:
    created = await oai.responses.create(input=QUESTION, max_output_tokens=8, **GREEDY)
    assert created.store is True
    stored = await oai.responses.retrieve(created.id)
    assert stored.output_text == created.output_text and stored.status == created.status
    deleted = await oai.responses.with_raw_response.delete(created.id)
    assert deleted.status_code == 200 and deleted.http_response.json()["deleted"] is True
    with pytest.raises(openai.NotFoundError):
        await oai.responses.retrieve(created.id)
    unstored = await oai.responses.create(input="Hi", max_output_tokens=2, store=False, **GREEDY)
    assert unstored.store is False
    with pytest.raises(openai.NotFoundError):
        await oai.responses.retrieve(unstored.id)


async def test_previous_response_id_is_the_whole_conversation_from_the_cache(
    oai: AsyncOpenAI,
) -> None:
    """Codex-style: the stored turn is the prefix (cached tokens reported) and the greedy
    text equals that of a client resending the whole conversation."""
    first = await oai.responses.create(input=QUESTION, max_output_tokens=16, **GREEDY)
    assert first.usage is not None
    later = await oai.responses.create(
        previous_response_id=first.id, input="And about Mars?", max_output_tokens=8, **GREEDY
    )
    assert later.previous_response_id == first.id
    assert later.usage is not None
    assert later.usage.input_tokens_details.cached_tokens >= first.usage.input_tokens
    whole: list[Any] = [
        {"role": "user", "content": QUESTION},
        *(item.model_dump(exclude_none=True) for item in first.output),
        {"role": "user", "content": "And about Mars?"},
    ]
    resent = await oai.responses.create(input=whole, max_output_tokens=8, store=False, **GREEDY)
    assert resent.output_text == later.output_text
    assert resent.usage is not None and resent.usage.input_tokens == later.usage.input_tokens
    # continued once more: the chain is followed
    third = await oai.responses.create(
        previous_response_id=later.id, input="Thanks", max_output_tokens=4, **GREEDY
    )
    assert third.usage is not None and third.usage.input_tokens > later.usage.input_tokens


async def test_input_items_list_the_whole_conversation_in_pages(oai: AsyncOpenAI) -> None:
    first = await oai.responses.create(input=QUESTION, max_output_tokens=8, **GREEDY)
    later = await oai.responses.create(
        previous_response_id=first.id, input="And about Mars?", max_output_tokens=4, **GREEDY
    )
    items = await oai.responses.input_items.list(later.id, order="asc")
    texts = [
        part.text
        for item in items.data
        if item.type == "message"
        for part in item.content
        if hasattr(part, "text")
    ]
    assert texts == [QUESTION, first.output_text, "And about Mars?"], texts
    assert len({item.id for item in items.data}) == 3 and not items.has_more
    newest = await oai.responses.input_items.list(later.id, limit=1)  # desc by default
    assert newest.has_more and newest.data[0].id == items.data[-1].id
    following = await oai.responses.input_items.list(later.id, limit=1, after=newest.data[0].id)
    assert following.data[0].id == items.data[-2].id
    with pytest.raises(openai.BadRequestError):
        await oai.responses.input_items.list(later.id, limit=500)
    with pytest.raises(openai.NotFoundError):
        await oai.responses.input_items.list("resp_none")


async def test_a_streamed_response_is_stored(oai: AsyncOpenAI) -> None:
    stream = await oai.responses.create(input="Hi", max_output_tokens=6, stream=True, **GREEDY)
    ends = ("response.completed", "response.incomplete")
    [done] = [event async for event in stream if event.type in ends]
    stored = await oai.responses.retrieve(done.response.id)
    assert stored.output_text == done.response.output_text


async def test_background_responses_are_polled_and_cancelled(oai: AsyncOpenAI) -> None:
    queued = await oai.responses.create(
        input=QUESTION, max_output_tokens=8, background=True, **GREEDY
    )
    assert queued.status == "queued" and queued.background is True
    done = await settled(oai, queued.id)
    assert done.status == "incomplete" and done.id == queued.id  # at max_output_tokens
    direct = await oai.responses.create(input=QUESTION, max_output_tokens=8, **GREEDY)
    assert done.output_text == direct.output_text
    long = await oai.responses.create(
        input="List the numbers from 1 to 10000, separated by commas.",  # long: ~2,000 tokens
        max_output_tokens=2000,
        background=True,
        **GREEDY,
    )
    await wait_until(
        lambda: oai.responses.retrieve(long.id), lambda r: r.status == "in_progress", what="run"
    )
    cancelled = await oai.responses.cancel(long.id)
    assert cancelled.status == "cancelled"
    assert (await oai.responses.retrieve(long.id)).status == "cancelled"
    with pytest.raises(openai.BadRequestError, match="only a background response"):
        await oai.responses.cancel(direct.id)


async def test_text_format_is_echoed_whole(oai: AsyncOpenAI) -> None:
    schema = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
    form: Any = {"type": "json_schema", "name": "city", "schema": schema, "strict": True}
    reply = await oai.responses.create(
        input="Name a city as JSON.", text={"format": form}, max_output_tokens=40, **GREEDY
    )
    assert reply.text is not None and reply.text.format is not None
    echoed = reply.text.format.model_dump(by_alias=True, exclude_none=True)
    assert echoed == form


async def test_a_stream_past_its_deadline_ends_with_response_failed(oai: AsyncOpenAI) -> None:
    stream = await oai.responses.create(
        input="List the numbers from 1 to 10000, separated by commas.",
        max_output_tokens=2000,
        stream=True,
        extra_body={"timeout": 0.5},
        **GREEDY,
    )
    events = [event async for event in stream]
    failed = events[-1]
    assert failed.type == "response.failed", [e.type for e in events[-3:]]
    assert failed.response.error is not None and failed.response.error.code == "server_error"
    errors = [e for e in events if e.type == "error"]
    assert errors and isinstance(errors[0].code, str)
    stored = await oai.responses.retrieve(failed.response.id)
    assert stored.status == "failed"


@pytest.mark.parametrize("max_attempts", [3, 1])
async def test_a_background_response_cut_short_by_kill_9_runs_again(
    test_config: Path, tmp_path: Path, max_attempts: int
) -> None:
    """Run again after the restart; with one attempt allowed, failed with the reason."""
    config = config_variant(test_config, tmp_path, task_max_attempts=max_attempts)
    body: dict[str, Any] = {
        "input": "List the numbers from 1 to 10000, separated by commas.",
        "max_output_tokens": 200,
        **GREEDY,
    }
    with live_server(config, name="background-kill") as live:
        async with AsyncOpenAI(base_url=live.url + "/v1", api_key="-", max_retries=0) as oai:
            queued = await oai.responses.create(background=True, **body)
            await wait_until(
                lambda: oai.responses.retrieve(queued.id),
                lambda r: r.status == "in_progress",
                what="a running response",
            )
            live.process.send_signal(signal.SIGKILL)
        live.process.wait(10)
    with live_server(config, name="background-kill-after") as live:
        async with AsyncOpenAI(base_url=live.url + "/v1", api_key="-", max_retries=0) as oai:
            done = await settled(oai, queued.id)
            if max_attempts == 1:
                assert done.status == "failed" and done.error is not None
                assert "cut short" in done.error.message
                return
            assert done.status == "incomplete" and done.background is True  # 200 tokens
            direct = await oai.responses.create(store=False, **body)
            assert done.output_text == direct.output_text
