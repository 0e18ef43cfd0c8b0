"""Counters an executor keeps about its own work, read by /health_check and /metrics.

Plain numbers and bucket counts written by the executor thread only; readers
on the event loop may see a step half-counted, never a torn value. Keeping
them here (rather than in a metrics library) leaves the hot path free of locks.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field, fields
from typing import Any

STEP_SECONDS_BOUNDS = (0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0)
BATCH_SIZE_BOUNDS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


@dataclass(slots=True)
class Histogram:
    """Cumulative-friendly bucket counts: counts[i] observations <= bounds[i], last is +Inf."""

    bounds: tuple[float, ...]
    counts: list[int] = field(default_factory=list)
    total: float = 0.0

    def __post_init__(self) -> None:
        self.counts = [0] * (len(self.bounds) + 1)

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.total += value

    def cumulative(self) -> list[tuple[str, int]]:
        """(upper bound, observations at or below it) pairs, Prometheus style."""
        out, running = [], 0
        for bound, count in zip([*map(str, self.bounds), "+Inf"], list(self.counts), strict=True):
            running += count
            out.append((bound, running))
        return out


@dataclass(slots=True)
class ExecutorStats:
    num_steps: int = 0
    num_decodes: int = 0
    num_decoded_tokens: int = 0  # prompt, generated and drafted tokens fed to llama_decode
    num_prompt_tokens: int = 0
    num_prompt_tokens_reused: int = 0  # of those, KV taken from the prefix cache
    # of the reused, KV copied from a request in flight (``speculative.sharing``)
    num_prompt_tokens_shared: int = 0
    num_generated_tokens: int = 0
    max_seqs_per_decode: int = 0  # the proof that requests shared decode steps
    last_seqs_per_decode: int = 0
    # how many decodes carried n sequences: the batch-size histogram
    decodes_by_num_seqs: dict[int, int] = field(default_factory=dict)
    decode_seconds: float = 0.0  # inside llama_decode, up to the device's synchronize
    step_seconds: float = 0.0
    # of those, waiting for the event loop to write the last step (speculative.handoff)
    loop_wait_seconds: float = 0.0
    # The executor thread's CPU time (time.thread_time) in steps, and in llama_decode:
    # unlike wall time, their difference holds when other processes share the cores.
    cpu_seconds: float = 0.0
    decode_cpu_seconds: float = 0.0
    num_drafted_tokens: int = 0
    num_accepted_tokens: int = 0
    # drafts verified, one per speculating sequence and step: with one sequence running,
    # its speculative steps (the others were plain)
    num_drafts: int = 0
    step_time: Histogram = field(default_factory=lambda: Histogram(STEP_SECONDS_BOUNDS))
    batch_size: Histogram = field(default_factory=lambda: Histogram(BATCH_SIZE_BOUNDS))

    def record_step(
        self,
        *,
        num_seqs: int,
        num_tokens: int,
        step_s: float,
        decode_s: float,
        cpu_s: float,
        loop_wait_s: float = 0.0,
    ) -> None:
        self.num_steps += 1
        self.step_seconds += step_s
        self.loop_wait_seconds += loop_wait_s
        self.cpu_seconds += cpu_s
        if num_seqs:
            self.num_decodes += 1
            self.num_decoded_tokens += num_tokens
            self.decode_seconds += decode_s
            self.max_seqs_per_decode = max(self.max_seqs_per_decode, num_seqs)
            self.decodes_by_num_seqs[num_seqs] = self.decodes_by_num_seqs.get(num_seqs, 0) + 1
            self.step_time.observe(step_s)
            self.batch_size.observe(num_seqs)
        self.last_seqs_per_decode = num_seqs

    def record_drafts(self, drafted: int, accepted: int) -> None:
        self.num_drafts += 1
        self.num_drafted_tokens += drafted
        self.num_accepted_tokens += accepted

    @property
    def prefix_hit_ratio(self) -> float:
        """Share of prompt tokens whose KV was reused rather than computed."""
        return (
            self.num_prompt_tokens_reused / self.num_prompt_tokens
            if self.num_prompt_tokens
            else 0.0
        )

    @property
    def python_overhead(self) -> float:
        """Share of step time spent outside llama_decode and the wait for the loop:
        batch building, sampling, detokenizing, handing results to the event loop."""
        busy = self.decode_seconds + self.loop_wait_seconds
        return 1 - busy / self.step_seconds if self.step_seconds else 0.0

    def as_dict(self) -> dict[str, Any]:
        # Runs on the event loop while the executor thread writes: copy the
        # histogram in one C-level step before iterating it.
        histogram = dict(self.decodes_by_num_seqs)
        skip = ("step_time", "batch_size")
        out: dict[str, Any] = {
            f.name: getattr(self, f.name) for f in fields(self) if f.name not in skip
        }
        out["decodes_by_num_seqs"] = {str(n): c for n, c in sorted(histogram.items())}
        out["mean_tokens_per_decode"] = (
            round(self.num_decoded_tokens / self.num_decodes, 2) if self.num_decodes else 0.0
        )
        out["python_overhead"] = round(self.python_overhead, 4)
        out["prefix_cache_hit_ratio"] = round(self.prefix_hit_ratio, 4)
        out["acceptance_rate"] = (
            round(self.num_accepted_tokens / self.num_drafted_tokens, 4)
            if self.num_drafted_tokens
            else None
        )
        return out
