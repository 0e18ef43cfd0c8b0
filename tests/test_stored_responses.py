"""Stored responses through the official openai client: ``store``, ``previous_response_id``,
``GET`` / ``DELETE``, ``background`` with polling and cancel."""

from __future__ import annotations

from typing import Any

import openai
import pytest
from openai import AsyncOpenAI
from openai.types.responses import Response

from tests.conftest import DEFAULT_MODEL, wait_until

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
