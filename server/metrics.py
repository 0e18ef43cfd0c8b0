"""Prometheus metrics at ``GET /metrics``.

Two sources, and neither costs the decode loop a lock: HTTP requests and
time-to-first-token are observed on the event loop; everything the executors
count (tokens, drafts, step-time and batch-size histograms) is read from their
own ``ExecutorStats`` when Prometheus scrapes, by a custom collector.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from starlette.requests import Request as HttpRequest
from starlette.responses import Response
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from batching.request import Request
from server import llama_metrics
from server.errors import ApiError
from server.models.registry import ModelRegistry
from server.router_metrics import RouterCollector
from speculative import devices

PREFIX = "edge_llm"
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
TTFT_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, float("inf"))


class Metrics:
    def __init__(self, models: ModelRegistry) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.requests = Counter(
            f"{PREFIX}_http_requests",
            "HTTP requests by route, method and status",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.ttft = Histogram(
            f"{PREFIX}_time_to_first_token_seconds",
            "time from arrival to the first token",
            ["model"],
            buckets=TTFT_BUCKETS,
            registry=self.registry,
        )
        self.registry.register(ModelCollector(models))
        # the gauges routers read (Gateway API Inference Extension), apart: see its module
        self.registry.register(RouterCollector(models))
        # llama-server's series and header (server.llama_metrics)
        self.models = models
        self.llama = llama_metrics.LlamaCounters()
        self.started_at = int(time.time())

    def observe_done(self, request: Request) -> None:
        """Event loop: a request finished; record its time to first token."""
        if request.first_token_at is not None:
            self.ttft.labels(request.model).observe(request.first_token_at - request.created_at)
        self.llama.observe(request)

    def render(self) -> bytes:
        return generate_latest(self.registry) + llama_metrics.render(self.llama, self.models)


class ModelCollector(Collector):
    """Reads loaded models' batchers and executor counters at scrape time."""

    def __init__(self, models: ModelRegistry) -> None:
        self.models = models

    def collect(self) -> Iterator[Metric]:
        def family(kind: Any, name: str, doc: str) -> Any:
            return kind(f"{PREFIX}_{name}", doc, labels=["model"])

        loaded = family(GaugeMetricFamily, "model_loaded", "1 for each model in memory")
        load_s = family(GaugeMetricFamily, "model_load_seconds", "how long the model took to load")
        waiting = family(GaugeMetricFamily, "queue_depth", "requests waiting for a sequence slot")
        running = family(GaugeMetricFamily, "running_sequences", "requests being decoded")
        overhead = family(
            GaugeMetricFamily,
            "python_overhead_ratio",
            "share of step time spent outside llama_decode",
        )
        counters = {
            "num_prompt_tokens": family(CounterMetricFamily, "prompt_tokens", "prompt tokens"),
            "num_generated_tokens": family(
                CounterMetricFamily, "generated_tokens", "generated tokens"
            ),
            "num_drafted_tokens": family(
                CounterMetricFamily, "drafted_tokens", "tokens proposed by a draft"
            ),
            "num_accepted_tokens": family(
                CounterMetricFamily, "accepted_tokens", "drafted tokens the target accepted"
            ),
            "num_decodes": family(CounterMetricFamily, "decode_steps", "llama_decode calls"),
            "num_prompt_tokens_reused": family(
                CounterMetricFamily,
                "prompt_tokens_reused",
                "prompt tokens whose KV came from the prefix cache, not computed",
            ),
            "num_prompt_tokens_shared": family(
                CounterMetricFamily,
                "prompt_tokens_shared",
                "of the reused prompt tokens, those copied from a request in flight",
            ),
        }
        host_bytes = family(
            GaugeMetricFamily,
            "prefix_cache_host_bytes",
            "host memory holding prompt states evicted from the KV cache",
        )
        memory = GaugeMetricFamily(
            f"{PREFIX}_model_memory_bytes",
            "bytes llama.cpp allocated for a loaded model, by kind (weights, kv, compute, draft)",
            labels=["model", "kind"],
        )
        step = family(HistogramMetricFamily, "decode_step_seconds", "wall time of one step")
        batch = family(HistogramMetricFamily, "decode_batch_size", "sequences in one decode")
        for name, model in list(self.models.loaded.items()):
            stats = model.executor.stats
            loaded.add_metric([name], 1)
            load_s.add_metric([name], model.load_seconds)
            waiting.add_metric([name], model.batcher.num_waiting)
            running.add_metric([name], model.batcher.num_running)
            overhead.add_metric([name], stats.python_overhead)
            host_bytes.add_metric([name], model.executor.prefix_stats.host_bytes)
            for kind, num_bytes in model.footprint.as_dict().items():
                if kind != "total_bytes":
                    memory.add_metric([name, kind.removesuffix("_bytes")], num_bytes)
            for attr, metric in counters.items():
                metric.add_metric([name], getattr(stats, attr))
            step.add_metric([name], stats.step_time.cumulative(), stats.step_time.total)
            batch.add_metric([name], stats.batch_size.cumulative(), stats.batch_size.total)
        yield from (loaded, load_s, waiting, running, overhead, host_bytes, *counters.values())
        yield from (step, batch, memory, *self._process())
        yield from _device_metrics(self.models)
        if (cache := self.models.result_cache) is not None:
            results = CounterMetricFamily(
                f"{PREFIX}_result_cache_requests",
                "requests by result-cache verdict (HIT, MISS, BYPASS)",
                labels=["result"],
            )
            for verdict, count in cache.counts.items():
                results.add_metric([verdict], count)
            yield results

    def _process(self) -> Iterator[Metric]:
        usage = self.models.memory()
        for key, doc in (
            ("rss_bytes", "resident memory of the server process"),
            ("budget_bytes", "memory budget for loaded models"),
            ("used_bytes", "memory held by loaded models (and loads under way)"),
        ):
            yield GaugeMetricFamily(f"{PREFIX}_memory_{key}", doc, value=usage[key] or 0)
        unloads = CounterMetricFamily(
            f"{PREFIX}_model_unloads",
            "models unloaded, by reason (expired, evicted, requested, crashed, shutdown)",
            labels=["model", "reason"],
        )
        for (name, reason), count in self.models.num_unloads.items():
            unloads.add_metric([name, reason], count)
        yield unloads


def _device_metrics(models: ModelRegistry) -> Iterator[Metric]:
    """Devices llama.cpp sees and, per loaded model, how many layers each holds."""
    memory = GaugeMetricFamily(
        f"{PREFIX}_device_memory_bytes",
        "memory of each device llama.cpp sees (kind: total or free)",
        labels=["device", "type", "kind"],
    )
    for dev in devices.devices():
        memory.add_metric([dev.name, dev.type, "total"], dev.memory_total)
        memory.add_metric([dev.name, dev.type, "free"], dev.memory_free)
    layers = GaugeMetricFamily(
        f"{PREFIX}_model_layers",
        "repeating layers of a model per device",
        labels=["model", "device"],
    )
    on_device = GaugeMetricFamily(
        f"{PREFIX}_model_device_bytes",
        "a model's weights, KV cache and compute buffers held in accelerator memory",
        labels=["model"],
    )
    for name, model in list(models.loaded.items()):
        for device, count in model.placement.get("layers", {}).items():
            layers.add_metric([name, device], count)
        on_device.add_metric([name], model.placement.get("device_bytes", 0))
    yield from (memory, layers, on_device)


class RequestMetricsMiddleware:
    """Counts every HTTP request by its route template (not its raw path) and status."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500

        async def send_and_watch(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_watch)
        finally:
            self.metrics.requests.labels(
                _route_label(scope.get("route")), scope["method"], str(status)
            ).inc()


def _route_label(route: BaseRoute | None) -> str:
    if isinstance(route, Route):
        return route.path_format
    return getattr(route, "path", None) or "unmatched"  # a Mount, or no route at all


async def metrics_endpoint(http: HttpRequest) -> Response:
    """Prometheus metrics; a 501 when turned off, as llama-server without --metrics."""
    metrics: Metrics = http.app.state.metrics
    if not metrics.models.config.server.metrics:
        raise ApiError(501, "metrics are turned off (server.metrics in the config)")
    response = Response(metrics.render(), media_type=CONTENT_TYPE)
    # llama-server's header, in its case: clients copy headers into a case-sensitive dict
    response.raw_headers.append((b"Process-Start-Time-Unix", str(metrics.started_at).encode()))
    return response
