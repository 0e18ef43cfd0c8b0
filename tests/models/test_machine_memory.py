"""A model that the memory budget allows but the machine cannot hold is refused before
llama.cpp allocates it, with the figures (server/models/memory.py ``machine_shortfall``):
a budget set by hand above the machine's memory, or memory taken by other processes
since start-up, must give a 503, not swap or the OOM killer."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import httpx
import pytest

from server.models.memory import available_memory_bytes
from tests.conftest import REPO, running_server, write_config

SMOLLM2 = str(REPO / "models" / "SmolLM2-135M-Instruct.Q8_0.gguf")
# 131,072 tokens x 64 sequences of SmolLM2's KV (~23 KB a token in f16): ~190 GB
HUGE = {"path": SMOLLM2, "context_size": 131_072, "max_batch_size": 64, "weights": "as-is"}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    folder = tmp_path_factory.mktemp("machine-memory")
    models = {"small": {"path": SMOLLM2, "context_size": 512, "max_batch_size": 2}, "huge": HUGE}
    settings = {
        "threads": 1,
        "data_dir": str(folder / "data"),
        "default_model": "small",
        "memory_budget_mb": 1 << 30,  # a budget no machine has: only the machine check stops it
    }
    config = write_config(folder, {"server": settings, "models": models})
    with running_server(config, name="machine-memory") as url:
        yield url


@pytest.fixture
async def client(server: str) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=server, timeout=120) as c:
        yield c


async def test_a_model_larger_than_the_machine_is_refused_with_the_figures(
    client: httpx.AsyncClient,
) -> None:
    if available_memory_bytes() > 150 << 30:
        pytest.skip("this machine has room for the 'huge' model's ~190 GB")
    reply = await client.post("/v1/completions", json={"model": "huge", "prompt": "Hi"})
    assert reply.status_code == 503, reply.text
    message = reply.json()["error"]["message"]
    assert "the machine has" in message and "MB available" in message, message
    needs_mb = int(message.split("needs about ")[1].split(" MB")[0])
    has_mb = int(message.split("the machine has ")[1].split(" MB")[0])
    assert needs_mb > has_mb > 0
    assert "huge" not in (await client.get("/health_check")).json()["loaded_models"]
    # The server goes on serving what fits.
    fits = await client.post("/v1/completions", json={"model": "small", "prompt": "Hi"})
    assert fits.status_code == 200, fits.text
