"""llama-server's own ``/metrics`` series (``llamacpp:*``), beside this server's.

Dashboards and the llama.cpp tests read these names. They are written as text
rather than through prometheus_client, which would rename a counter without a
``_total`` suffix (llama-server's ``llamacpp:n_tokens_max``). Requests are
counted on the event loop as they finish; the engine's counters (decodes,
drafts) are read from the executors at scrape time and summed over models, as
llama-server serves one.
"""

from __future__ import annotations

from dataclasses import dataclass

from batching.request import Request
from server.models.registry import ModelRegistry


@dataclass(slots=True)
class LlamaCounters:
    """Per-request sums, with llama-server's meaning of prompt and generation time."""

    num_prompt_tokens: int = 0  # computed, not taken from the prefix cache
    num_cached_tokens: int = 0
    prompt_seconds: float = 0.0
    num_predicted_tokens: int = 0
    predicted_seconds: float = 0.0
    max_tokens_seen: int = 0  # the longest prompt + output of one request

    def observe(self, request: Request) -> None:
        started, first, finished = request.started_at, request.first_token_at, request.finished_at
        self.num_prompt_tokens += request.num_prompt_tokens - request.num_cached_tokens
        self.num_cached_tokens += request.num_cached_tokens
        self.num_predicted_tokens += request.num_output_tokens
        if started and first:
            self.prompt_seconds += first - started
        if first and finished:
            self.predicted_seconds += finished - first
        total = request.num_prompt_tokens + request.num_output_tokens
        self.max_tokens_seen = max(self.max_tokens_seen, total)


def render(counters: LlamaCounters, models: ModelRegistry) -> bytes:
    """The ``llamacpp:`` block in Prometheus' text format."""
    loaded = list(models.loaded.values())
    stats = [m.executor.stats for m in loaded]
    decodes = sum(s.num_decodes for s in stats)
    busy = sum(n * c for s in stats for n, c in s.decodes_by_num_seqs.items())
    c = counters
    series: list[tuple[str, str, str, float]] = [
        ("counter", "prompt_tokens_total", "prompt tokens computed", c.num_prompt_tokens),
        (
            "counter",
            "prompt_tokens_cached_total",
            "prompt tokens taken from the prefix cache",
            c.num_cached_tokens,
        ),
        ("counter", "prompt_seconds_total", "prompt reading time", c.prompt_seconds),
        ("counter", "tokens_predicted_total", "tokens generated", c.num_predicted_tokens),
        (
            "counter",
            "tokens_predicted_seconds_total",
            "generation time after the first token",
            c.predicted_seconds,
        ),
        ("counter", "n_decode_total", "llama_decode calls", decodes),
        ("counter", "n_tokens_max", "largest prompt + output of a request", c.max_tokens_seen),
        (
            "counter",
            "spec_decode_num_draft_tokens_total",
            "tokens proposed by a draft",
            sum(s.num_drafted_tokens for s in stats),
        ),
        (
            "counter",
            "spec_decode_num_accepted_tokens_total",
            "drafted tokens accepted",
            sum(s.num_accepted_tokens for s in stats),
        ),
        (
            "counter",
            "spec_decode_num_drafts_total",
            "drafts verified",
            sum(s.num_drafts for s in stats),
        ),
        (
            "gauge",
            "prompt_tokens_seconds",
            "average prompt throughput in tokens/s",
            _rate(c.num_prompt_tokens, c.prompt_seconds),
        ),
        (
            "gauge",
            "predicted_tokens_seconds",
            "average generation throughput in tokens/s",
            _rate(c.num_predicted_tokens, c.predicted_seconds),
        ),
        (
            "gauge",
            "requests_processing",
            "requests being decoded",
            sum(m.batcher.num_running for m in loaded),
        ),
        (
            "gauge",
            "requests_deferred",
            "requests waiting for a slot",
            sum(m.batcher.num_waiting for m in loaded),
        ),
        (
            "gauge",
            "n_busy_slots_per_decode",
            "average sequences per llama_decode",
            busy / decodes if decodes else 0.0,
        ),
    ]
    lines = []
    for kind, name, doc, value in series:
        lines += [
            f"# HELP llamacpp:{name} {doc}",
            f"# TYPE llamacpp:{name} {kind}",
            f"llamacpp:{name} {float(value)!r}",
        ]
    return ("\n".join(lines) + "\n").encode()


def _rate(count: int, seconds: float) -> float:
    return count / seconds if seconds > 0 else 0.0
