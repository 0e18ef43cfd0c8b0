"""The gauges a router picks a replica by: the Gateway API Inference Extension's
model-server protocol (``docs/proposals/003-model-server-protocol``), which the
endpoint picker (EPP), llm-d, vLLM's production-stack and SGLang's gateway read.

Each is published twice: under this server's own names (``edge_llm_*``, label
``model``) and under the vLLM names those routers read by default (``vllm:*``,
label ``model_name``), so a router pointed at vLLM needs no flags here. Values
come from the batchers and executors at scrape time, as in ``server.metrics``.

- TotalQueuedRequests: edge_llm_num_requests_waiting, vllm:num_requests_waiting
- TotalRunningRequests: edge_llm_num_requests_running, vllm:num_requests_running
- KVCacheUtilization: edge_llm_kv_cache_usage_ratio, vllm:kv_cache_usage_perc and its
  older name vllm:gpu_cache_usage_perc
- LoRA info: edge_llm_lora_requests_info, vllm:lora_requests_info
- BlockSize, NumGPUBlocks (optional): edge_llm_cache_config_info, no alias (see below)

vLLM's "perc" gauges are fractions 0-1 despite the name; so are these.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from server.models.registry import ModelRegistry

PREFIX = "edge_llm"
VLLM = "vllm:"


class RouterCollector(Collector):
    def __init__(self, models: ModelRegistry) -> None:
        self.models = models

    def collect(self) -> Iterator[Metric]:
        gauges = {
            "waiting": "requests queued for a sequence slot (TotalQueuedRequests)",
            "running": "requests being decoded (TotalRunningRequests)",
            "kv": "share 0-1 of the KV cache the running requests hold (KVCacheUtilization)",
        }
        ours = {
            "waiting": _gauge(f"{PREFIX}_num_requests_waiting", gauges["waiting"], "model"),
            "running": _gauge(f"{PREFIX}_num_requests_running", gauges["running"], "model"),
            "kv": _gauge(f"{PREFIX}_kv_cache_usage_ratio", gauges["kv"], "model"),
        }
        aliases = {
            "waiting": [_gauge(f"{VLLM}num_requests_waiting", gauges["waiting"], "model_name")],
            "running": [_gauge(f"{VLLM}num_requests_running", gauges["running"], "model_name")],
            "kv": [
                _gauge(f"{VLLM}kv_cache_usage_perc", gauges["kv"], "model_name"),
                _gauge(f"{VLLM}gpu_cache_usage_perc", gauges["kv"], "model_name"),
            ],
        }
        # Optional in the protocol, for the EPP's prefix scorer: llama.cpp's KV cache is
        # made of one-token cells, so a "block" is one token. Not aliased as
        # vllm:cache_config_info: an EPP that auto-tunes its prefix hashing from it would
        # hash every token; its configured block size serves it better.
        config = GaugeMetricFamily(
            f"{PREFIX}_cache_config_info",
            "KV cache shape: block_size tokens a cell, num_gpu_blocks cells (value 1)",
            labels=["model", "block_size", "num_gpu_blocks"],
        )
        for name, model in list(self.models.loaded.items()):
            values = {
                "waiting": model.batcher.num_waiting,
                "running": model.batcher.num_running,
                "kv": model.executor.kv_usage,
            }
            for key, value in values.items():
                for family in (ours[key], *aliases[key]):
                    family.add_metric([name], value)
            config.add_metric([name, "1", str(model.executor.num_kv_cells)], 1)
        for key in gauges:
            yield ours[key]
            yield from aliases[key]
        yield config
        yield from _lora_info()


def _gauge(name: str, doc: str, label: str) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, labels=[label])


def _lora_info() -> Iterator[Metric]:
    """The protocol's LoRA info gauge: its value the time of the update (the EPP keeps
    the newest series). This server loads no adapters, so max_lora is 0 and both lists
    are empty: the EPP's LoRA affinity sees no adapter here and scores by load alone."""
    labels = ["max_lora", "running_lora_adapters", "waiting_lora_adapters"]
    now = time.time()
    for name in (f"{PREFIX}_lora_requests_info", f"{VLLM}lora_requests_info"):
        info = GaugeMetricFamily(name, "LoRA adapters: none are served here", labels=labels)
        info.add_metric(["0", "", ""], now)
        yield info
