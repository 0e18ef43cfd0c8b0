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


def test_a_probe_in_which_the_option_never_ran_is_tried_again() -> None:
    """No request could draft during the probe (speculation off in the body): it judged
    nothing, so it neither confirms the winner nor waits longer; the next request that
    can use the option is measured at once."""
    gate = CostGate(probe_steps=2, min_interval=10, interval=10, explore_from=10)
    for _ in range(4):  # measured: the option costs more
        on = gate.is_on
        gate.record(on, seconds=0.03 if on else 0.01, emitted=1)
    for _ in range(30):  # the option is asked for but never runs
        gate.record(False, seconds=0.01, emitted=1)
    assert gate.interval == 10 and gate.is_on  # still probing, not backed off
    gate.record(True, seconds=0.001, emitted=1)  # it runs: this probe judges
    gate.record(True, seconds=0.001, emitted=1)
    assert gate.num_on == 4 and gate.explore_from == gate.num_steps + gate.interval
    assert gate.on_cost < 0.03  # what it cost now is weighed
