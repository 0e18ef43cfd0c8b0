"""The model-server protocol's gauges (server/router_metrics.py), scraped from /metrics
while real requests run and queue: their type, labels and values, under this server's
names and the vLLM aliases a router reads."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import (
    DEFAULT_MODEL,
    config_variant,
    health,
    running_server,
    slow_steps,
    wait_until,
)

MAX_BATCH = 2
SENT = 5  # 2 run, 3 queue
Families = dict[str, tuple[str, list[tuple[dict[str, str], float]]]]


@pytest.fixture(scope="module")
def url(test_config: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    config = config_variant(
        test_config, tmp_path_factory.mktemp("router-metrics"), max_batch_size=MAX_BATCH
    )
    env = {"EDGE_LLM_FAULTS": ""}  # slow_steps: requests outlive the scrapes
    with running_server(config, name="router-metrics-server", env=env) as base:
        yield base


@pytest.fixture
async def client(url: str) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=url, timeout=120) as http:
        yield http


async def scrape(client: httpx.AsyncClient) -> Families:
    """name -> (type, [(labels, value)]), as a Prometheus server parses the page."""
    reply = await client.get("/metrics")
    assert reply.status_code == 200, reply.text
    return {
        family.name: (family.type, [(s.labels, s.value) for s in family.samples])
        for family in text_string_to_metric_families(reply.text)
    }


def gauge(families: Families, name: str, label: str = "model") -> float:
    kind, samples = families[name]
    assert kind == "gauge", (name, kind)
    assert [labels for labels, _ in samples] == [{label: DEFAULT_MODEL}], samples
    return samples[0][1]


async def test_the_gauges_follow_requests_running_and_queued(client: httpx.AsyncClient) -> None:
    await client.post("/generate", json={"prompt": "warm up", "max_tokens": 1})
    idle = await scrape(client)
    for name in ("edge_llm_num_requests_running", "edge_llm_num_requests_waiting"):
        assert gauge(idle, name) == 0
    assert gauge(idle, "edge_llm_kv_cache_usage_ratio") == 0
    async with slow_steps(client, 0.05):
        body = {"prompt": "Write a long story about a lighthouse.", "max_tokens": 200}
        sent = [asyncio.ensure_future(client.post("/generate", json=body)) for _ in range(SENT)]
        await wait_until(
            lambda: health(client),
            lambda h: h["running"] == MAX_BATCH and h["waiting"] == SENT - MAX_BATCH,
            what="2 requests running, 3 queued",
        )
        busy = await scrape(client)
        for task in sent:
            task.cancel()
    await asyncio.gather(*sent, return_exceptions=True)

    pairs = {
        "running": ("edge_llm_num_requests_running", "vllm:num_requests_running", MAX_BATCH),
        "waiting": ("edge_llm_num_requests_waiting", "vllm:num_requests_waiting", SENT - MAX_BATCH),
    }
    for ours, alias, expected in pairs.values():
        assert gauge(busy, ours) == expected
        assert gauge(busy, alias, "model_name") == expected
    # both running sequences hold their prompt and some output, out of 2 x 2048 cells
    kv = gauge(busy, "edge_llm_kv_cache_usage_ratio")
    assert 0 < kv < 0.5, kv
    for alias in ("vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc"):
        assert abs(gauge(busy, alias, "model_name") - kv) < 0.05  # a step apart at most

    kind, samples = busy["edge_llm_cache_config_info"]
    assert kind == "gauge"
    ((labels, value),) = samples
    assert value == 1 and labels["block_size"] == "1"
    assert int(labels["num_gpu_blocks"]) >= MAX_BATCH * 2048 * 0.99
    for name in ("edge_llm_lora_requests_info", "vllm:lora_requests_info"):
        kind, ((labels, stamp),) = busy[name]
        assert kind == "gauge" and stamp > 1.7e9  # a Unix time: the EPP keeps the newest
        assert labels == {"max_lora": "0", "running_lora_adapters": "", "waiting_lora_adapters": ""}

    done = await wait_until(
        lambda: scrape(client),
        lambda f: gauge(f, "edge_llm_num_requests_running") == 0,
        what="the cancelled requests gone",
    )
    assert gauge(done, "vllm:num_requests_waiting", "model_name") == 0
    assert gauge(done, "edge_llm_kv_cache_usage_ratio") == 0
