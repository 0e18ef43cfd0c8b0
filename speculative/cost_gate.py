"""Explore/exploit between two ways of running a step, on their measured cost.

Used where which way is cheaper depends on the host and the load, so no rule
written here would hold everywhere: speculating or decoding plainly
(``speculative.adaptive``), waiting for the event loop to send a step's tokens
before the next decode or not (``speculative.handoff``).
"""

from __future__ import annotations

from dataclasses import dataclass

EMA = 0.2  # weight of the newest observation


@dataclass(slots=True)
class CostGate:
    """Whether to use an option ("on") or not, by measured seconds per emitted token.

    Both modes are measured first (on, then off); then the cheaper one runs, and the
    other is re-tried for ``probe_steps`` now and then. A probe that confirms the
    winner doubles the wait before the next one (up to ``max_interval``), so an
    option that does not pay costs almost nothing in the long run.
    """

    probe_steps: int = 4  # samples of each mode before judging; steps of a probe
    min_interval: int = 64
    max_interval: int = 4096
    on_cost: float = 0.0  # seconds per emitted token, over the recent steps of the mode
    off_cost: float = 0.0
    # EMAs of a step's seconds and tokens: their ratio weighs each step by what it
    # emitted, where an EMA of each step's own ratio let one rejected draft (216 ms for
    # 3 tokens beside steps of 220 ms for 9) outweigh the thirty accepted before it
    # and switch n-gram speculation off in a file being copied (Qwen2.5 Coder 0.5B)
    on_seconds: float = 0.0
    on_emitted: float = 0.0
    off_seconds: float = 0.0
    off_emitted: float = 0.0
    num_on: int = 0
    num_off: int = 0
    num_steps: int = 0
    interval: int = 64
    explore_from: int = 64  # step at which the next probe starts
    last_winner: bool | None = None  # was the option cheaper at the last probe
    # the explored mode and its sample count when the probe began: a probe in which it
    # never ran (no request could draft) judges nothing and is tried again
    probe_mode: bool = False
    probe_count: int = 0

    @property
    def is_on(self) -> bool:
        if self.num_on < self.probe_steps:
            return True
        if self.num_off < self.probe_steps:
            return False
        exploring = self.explore_from <= self.num_steps < self.explore_from + self.probe_steps
        return self._on_wins != exploring

    @property
    def _on_wins(self) -> bool:
        return self.on_cost <= self.off_cost

    def record(self, on: bool, seconds: float, emitted: int) -> None:
        """One step's cost (leave out steps whose cost the mode does not set, such as
        ones with prompt chunks, which would swamp it)."""
        if self.num_steps == self.explore_from:  # a probe begins
            self.probe_mode = not self._on_wins
            self.probe_count = self.num_on if self.probe_mode else self.num_off
        if emitted > 0:
            if on:
                self.on_seconds = _ema(self.on_seconds, seconds, self.num_on)
                self.on_emitted = _ema(self.on_emitted, emitted, self.num_on)
                self.on_cost = self.on_seconds / self.on_emitted
                self.num_on += 1
            else:
                self.off_seconds = _ema(self.off_seconds, seconds, self.num_off)
                self.off_emitted = _ema(self.off_emitted, emitted, self.num_off)
                self.off_cost = self.off_seconds / self.off_emitted
                self.num_off += 1
        self.num_steps += 1
        if self.num_steps == self.explore_from + self.probe_steps:  # a probe ended
            if (self.num_on if self.probe_mode else self.num_off) == self.probe_count:
                self.explore_from = self.num_steps  # it never ran: probe again
                return
            winner = self._on_wins
            same = winner == self.last_winner
            self.interval = min(self.interval * 2, self.max_interval) if same else self.min_interval
            self.last_winner = winner
            self.explore_from = self.num_steps + self.interval


def _ema(mean: float, value: float, count: int) -> float:
    # a plain average while samples are few, then an exponential moving one
    weight = max(EMA, 1 / (count + 1))
    return (1 - weight) * mean + weight * value
