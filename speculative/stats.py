"""Counters an executor keeps about its own work, read by /health_check."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any


@dataclass(slots=True)
class ExecutorStats:
    """Written by the executor thread only; readers may see a step half-counted."""

    num_steps: int = 0
    num_decodes: int = 0
    num_decoded_tokens: int = 0  # prompt and generated tokens fed to llama_decode
    num_generated_tokens: int = 0
    max_seqs_per_decode: int = 0  # the proof that requests shared decode steps
    last_seqs_per_decode: int = 0
    # how many decodes carried n sequences: the batch-size histogram
    decodes_by_num_seqs: dict[int, int] = field(default_factory=dict)
    decode_seconds: float = 0.0
    step_seconds: float = 0.0
    num_drafted_tokens: int = 0
    num_accepted_tokens: int = 0

    def record_step(
        self, *, num_seqs: int, num_tokens: int, step_s: float, decode_s: float
    ) -> None:
        self.num_steps += 1
        self.step_seconds += step_s
        if num_seqs:
            self.num_decodes += 1
            self.num_decoded_tokens += num_tokens
            self.decode_seconds += decode_s
            self.max_seqs_per_decode = max(self.max_seqs_per_decode, num_seqs)
            self.decodes_by_num_seqs[num_seqs] = self.decodes_by_num_seqs.get(num_seqs, 0) + 1
        self.last_seqs_per_decode = num_seqs

    def record_drafts(self, drafted: int, accepted: int) -> None:
        self.num_drafted_tokens += drafted
        self.num_accepted_tokens += accepted

    def as_dict(self) -> dict[str, Any]:
        # Runs on the event loop while the executor thread writes: copy the
        # histogram in one C-level step before iterating it.
        histogram = dict(self.decodes_by_num_seqs)
        out: dict[str, Any] = {f.name: getattr(self, f.name) for f in fields(self)}
        out["decodes_by_num_seqs"] = {str(n): c for n, c in sorted(histogram.items())}
        out["mean_tokens_per_decode"] = (
            round(self.num_decoded_tokens / self.num_decodes, 2) if self.num_decodes else 0.0
        )
        # share of step time spent outside llama_decode: batch building,
        # sampling, detokenizing, handing results to the event loop
        out["python_overhead"] = (
            round(1 - self.decode_seconds / self.step_seconds, 4) if self.step_seconds else 0.0
        )
        out["acceptance_rate"] = (
            round(self.num_accepted_tokens / self.num_drafted_tokens, 4)
            if self.num_drafted_tokens
            else None
        )
        return out
