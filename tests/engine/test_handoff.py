"""Whether a step waits for the event loop before it decodes: chosen per batch size by
measured cost (the wait itself is the bridge's, tested in test_bridge)."""

from __future__ import annotations

from speculative.handoff import Handoff


def test_each_batch_size_keeps_whichever_costs_less_per_token() -> None:
    waits: list[float] = []

    def wait_written(timeout: float) -> bool:
        waits.append(timeout)
        return True

    handoff = Handoff(wait_written)
    # one stream: a step costs 8 ms after a wait, 9 ms without; 16 streams: 60 against 58
    cost = {(1, True): 0.008, (1, False): 0.009, (16, True): 0.060, (16, False): 0.058}
    chosen: dict[int, list[bool]] = {1: [], 16: []}
    for _ in range(40):
        for num_seqs in (1, 16):
            waited = handoff.before_decode(num_seqs) > 0
            chosen[num_seqs].append(waited)
            handoff.record(num_seqs, waited, cost[num_seqs, waited], emitted=num_seqs)
    assert chosen[1][:8] == [True] * 4 + [False] * 4  # both measured first
    assert all(chosen[1][8:]) and not any(chosen[16][8:])
    assert len(waits) == sum(chosen[1]) + sum(chosen[16])
    assert handoff.choices() == {"1": "waits for the loop", "16-31": "overlaps the loop"}


def test_without_a_loop_to_wait_for_a_step_never_waits() -> None:
    handoff = Handoff(None)
    handoff.record(1, False, 0.01, 1)
    assert handoff.before_decode(1) == 0.0
    assert handoff.choices() == {}
