"""The cost gate that picks between two ways of running a step, as pure logic."""

from __future__ import annotations

from speculative.cost_gate import CostGate


def test_cost_gate_measures_both_keeps_the_cheaper_and_backs_off() -> None:
    gate = CostGate(probe_steps=2, min_interval=10, interval=10, explore_from=10)
    modes = []
    for _ in range(60):
        on = gate.is_on
        modes.append(on)
        gate.record(on, seconds=0.03 if on else 0.01, emitted=1)
    assert modes[:4] == [True, True, False, False]  # measure the option on, then off
    assert not any(modes[4:10])  # off is cheaper: keep it...
    assert modes[10:12] == [True, True]  # ...probe the option at step 10, 10 steps later...
    assert not any(modes[12:22])
    assert modes[22:24] == [True, True]  # ...and again: the same winner twice...
    assert not any(modes[24:44])  # ...so the wait doubles
    assert modes[44:46] == [True, True]
    assert not any(modes[46:60])
