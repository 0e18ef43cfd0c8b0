"""/metrics parses as Prometheus text and its counters move with real traffic.

Exact deltas need a server no other test sends work to: this module has its own.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import DEFAULT_MODEL, config_variant, running_server


@pytest.fixture(scope="module")
def server(test_config: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """This module's own server (``client`` talks to it)."""
    config = config_variant(test_config, tmp_path_factory.mktemp("metrics"))
    with running_server(config, name="metrics-server") as url:
        yield url


async def scrape(client: httpx.AsyncClient) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    reply = await client.get("/metrics")
    assert reply.status_code == 200
    assert reply.headers["content-type"].startswith("text/plain")
    samples = {}
    for family in text_string_to_metric_families(reply.text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(
    samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str
) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


async def test_metrics_parse_and_counters_move(client: httpx.AsyncClient) -> None:
    await client.post("/generate", json={"prompt": "warm up", "max_tokens": 1})
    before = await scrape(client)
    reply = await client.post("/generate", json={"prompt": "Say hello.", "max_tokens": 8})
    body = reply.json()
    await client.post("/generate", json={"prompt": ""})  # a 400, counted as such
    after = await scrape(client)
    model = {"model": DEFAULT_MODEL}

    def moved(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    ok = {"route": "/generate", "method": "POST"}
    assert moved("edge_llm_http_requests_total", **ok, status="200") == 1
    assert moved("edge_llm_http_requests_total", **ok, status="400") == 1
    assert moved("edge_llm_generated_tokens_total", **model) == body["usage"]["completion_tokens"]
    assert moved("edge_llm_prompt_tokens_total", **model) == body["usage"]["prompt_tokens"]
    assert moved("edge_llm_time_to_first_token_seconds_count", **model) == 1
    assert moved("edge_llm_decode_step_seconds_count", **model) >= 1
    assert moved("edge_llm_decode_batch_size_count", **model) >= 1
    assert value(after, "edge_llm_model_loaded", **model) == 1
    assert value(after, "edge_llm_model_load_seconds", **model) > 0
    assert value(after, "edge_llm_running_sequences", **model) == 0
    assert ("edge_llm_queue_depth", (("model", DEFAULT_MODEL),)) in after
    assert ("edge_llm_drafted_tokens_total", (("model", DEFAULT_MODEL),)) in after
