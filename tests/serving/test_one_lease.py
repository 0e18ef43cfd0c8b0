"""A generation request of any API family takes exactly one lease of its model.

Whatever needs the model before the request is queued (a chat template, llama-server's
logit biases given as text, Ollama's check that the model can think) is done under the
one lease ``server.serving.prepare.prepare`` takes; a second lease was a second wait for the
model, outside the body's timeout. ``leases_taken`` in ``/health_check`` counts them.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import DEFAULT_MODEL, config_variant, health, running_server

SAY = [{"role": "user", "content": "Say hello."}]
SHORT = {"model": DEFAULT_MODEL, "temperature": 0}

CASES: dict[str, tuple[str, dict[str, Any]]] = {
    "openai chat": ("/v1/chat/completions", {**SHORT, "messages": SAY, "max_tokens": 2}),
    "openai chat streamed": (
        "/v1/chat/completions",
        {**SHORT, "messages": SAY, "max_tokens": 2, "stream": True},
    ),
    "openai completion": ("/v1/completions", {**SHORT, "prompt": "Hello", "max_tokens": 2}),
    "anthropic": ("/v1/messages", {**SHORT, "messages": SAY, "max_tokens": 2}),
    "responses": ("/v1/responses", {**SHORT, "input": "Say hello.", "max_output_tokens": 2}),
    "ollama chat": (
        "/api/chat",
        {"model": DEFAULT_MODEL, "messages": SAY, "stream": False, "options": {"num_predict": 2}},
    ),
    "ollama generate": (
        "/api/generate",
        {"model": DEFAULT_MODEL, "prompt": "Hello", "stream": False, "options": {"num_predict": 2}},
    ),
    # the model's vocabulary turns the text bias into tokens: under prepare's lease
    "llama-server completion": (
        "/completion",
        {"prompt": "Hello", "n_predict": 2, "logit_bias": [["world", -1.0]]},
    ),
    "prototype": ("/generate", {"prompt": "Hello", "max_tokens": 2}),
}


@pytest.fixture(scope="module")
def server(test_config: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """This module's own server: no other test's request takes a lease meanwhile."""
    config = config_variant(test_config, tmp_path_factory.mktemp("one-lease"))
    with running_server(config, name="one-lease-server") as url:
        yield url


async def load(client: httpx.AsyncClient) -> None:
    """The model loaded (its counter starts at its load)."""
    body = {**SHORT, "messages": SAY, "max_tokens": 1}
    assert (await client.post("/v1/chat/completions", json=body)).status_code == 200


async def leases(client: httpx.AsyncClient) -> int:
    model: dict[str, Any] = (await health(client))["models"][DEFAULT_MODEL]
    taken: int = model["leases_taken"]
    return taken


@pytest.mark.parametrize("case", CASES)
async def test_one_lease_per_request(client: httpx.AsyncClient, case: str) -> None:
    path, body = CASES[case]
    await load(client)
    before = await leases(client)
    reply = await client.post(path, json=body)
    assert reply.status_code == 200, reply.text
    assert await leases(client) == before + 1, case


async def test_a_refused_think_takes_one_lease_too(client: httpx.AsyncClient) -> None:
    body = {"model": DEFAULT_MODEL, "messages": SAY, "stream": False, "think": True}
    await load(client)
    before = await leases(client)
    reply = await client.post("/api/chat", json=body)
    assert reply.status_code == 400 and "does not support thinking" in reply.text, reply.text
    assert await leases(client) == before + 1
