"""Model switching: two real models side by side, unknown and broken ones."""

from __future__ import annotations

import asyncio

import httpx

from tests.conftest import DEFAULT_MODEL, SECOND_MODEL


async def test_two_models_interleaved_both_answer(client: httpx.AsyncClient) -> None:
    names = [DEFAULT_MODEL, SECOND_MODEL] * 3
    replies = await asyncio.gather(
        *(
            client.post(
                "/generate",
                json={
                    "prompt": "Say hello.",
                    "model_name": name,
                    "temperature": 0,
                    "max_tokens": 16,
                },
            )
            for name in names
        )
    )
    for name, reply in zip(names, replies, strict=True):
        assert reply.status_code == 200, reply.text
        assert reply.json()["model"] == name
        assert reply.json()["text"].strip()
    health = (await client.get("/health_check")).json()
    assert {DEFAULT_MODEL, SECOND_MODEL} <= set(health["loaded_models"])


async def test_unknown_model_is_404_listing_known_names(client: httpx.AsyncClient) -> None:
    reply = await client.post("/generate", json={"prompt": "hi", "model_name": "gpt-9"})
    assert reply.status_code == 404
    message = reply.json()["error"]["message"]
    assert "gpt-9" in message and DEFAULT_MODEL in message and SECOND_MODEL in message


async def test_missing_and_corrupt_models_fail_alone(client: httpx.AsyncClient) -> None:
    missing = await client.post("/generate", json={"prompt": "hi", "model_name": "missing-model"})
    assert missing.status_code == 503
    assert "does not exist" in missing.json()["error"]["message"]
    assert "pull" in missing.json()["error"]["message"]
    corrupt = await client.post("/generate", json={"prompt": "hi", "model_name": "corrupt-model"})
    assert corrupt.status_code == 503
    assert "could not load" in corrupt.json()["error"]["message"]
    good = await client.post("/generate", json={"prompt": "hi", "max_tokens": 4})
    assert good.status_code == 200
