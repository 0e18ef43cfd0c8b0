"""Whether a step waits for the event loop to write the last step's tokens before it decodes.

The executor holds the GIL between decodes, so the loop's work on a step's tokens
(SSE frames and socket writes: ~0.3 ms of CPU a stream on the 2-core AMD EPYC) runs
while the next ``llama_decode`` computes. Where llama.cpp's threads take every core,
that work preempts one of them and the others wait for it at the graph's next
barrier. Measured there (smollm2 Q8_0, one sampled stream, 2026-12-06): a decode took
9.7-10.8 ms overlapped and 8.2-8.7 ms when the step first waited for the loop, and
tokens/s rose 6-9%; at 16 streams the decode did not change and waiting only added
the loop's ~2 ms a step; where cores are spare (a GPU host) waiting never pays.

So no rule decides: for each size class of the batch (1, 2-3, 4-7, ... sequences)
a ``CostGate`` measures seconds per emitted token of decode-only steps with and
without the wait, keeps the cheaper, and re-measures now and then.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from speculative.cost_gate import CostGate

# A loop busy with something else (a large request to parse) holds a decode no longer.
WAIT_LIMIT_S = 0.005
WaitWritten = Callable[[float], bool]  # LoopBridge.wait_written


class Handoff:
    def __init__(self, wait_written: WaitWritten | None) -> None:
        self._wait_written = wait_written
        self._gates: dict[int, CostGate] = {}

    def before_decode(self, num_seqs: int) -> float:
        """Wait for the loop if that pays at this batch size; the seconds waited (0.0
        when the step does not wait)."""
        if self._wait_written is None or num_seqs == 0:
            return 0.0
        if not self._gate(num_seqs).is_on:
            return 0.0
        started = time.perf_counter()
        self._wait_written(WAIT_LIMIT_S)
        return max(time.perf_counter() - started, 1e-9)  # > 0: the step did wait

    def record(self, num_seqs: int, waited: bool, seconds: float, emitted: int) -> None:
        """A decode-only step's whole cost, its wait included."""
        if self._wait_written is not None and num_seqs:
            self._gate(num_seqs).record(waited, seconds, emitted)

    def choices(self) -> dict[str, str]:
        """What each batch size class does now, for /health_check."""
        out = {}
        for size_class, gate in sorted(dict(self._gates).items()):
            low, high = 1 << (size_class - 1), (1 << size_class) - 1
            label = str(low) if low == high else f"{low}-{high}"
            out[label] = "waits for the loop" if gate.is_on else "overlaps the loop"
        return out

    def _gate(self, num_seqs: int) -> CostGate:
        size_class = num_seqs.bit_length()
        gate = self._gates.get(size_class)
        if gate is None:
            gate = self._gates[size_class] = CostGate()
        return gate
