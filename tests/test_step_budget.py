"""The step's prompt-token budget and how prompts share it (pure functions)."""

from __future__ import annotations

from speculative.budget import MIN_PROMPT_TOKENS, StepBudget, fair_shares


def test_equal_shares_and_a_short_prompt_takes_only_what_it_needs() -> None:
    assert fair_shares([1000, 1000], [0, 0], 100) == [50, 50]
    assert fair_shares([1000, 10, 1000], [0, 0, 0], 100) == [45, 10, 45]
    assert fair_shares([5, 7], [0, 0], 100) == [5, 7]
    assert sum(fair_shares([300, 200, 100], [0, 0, 0], 256)) == 256


def test_higher_priority_is_fed_first() -> None:
    assert fair_shares([1000, 1000], [0, 5], 100) == [0, 100]
    assert fair_shares([1000, 30, 1000], [0, 5, 0], 100) == [35, 30, 35]


def test_no_target_nothing_decoding_or_nothing_measured_gives_the_whole_step() -> None:
    unset = StepBudget(decode_step_s=0.060, prompt_token_s=0.002)
    assert unset.prompt_tokens(num_decoding=8, capacity=504) == 504  # the default: no target
    budget = StepBudget(max_step_ms=100)
    assert budget.prompt_tokens(num_decoding=8, capacity=504) == 504  # not measured yet
    budget.record(num_decoding=0, num_prompt=500, decode_s=1.0)  # 2 ms a prompt token
    assert budget.prompt_tokens(num_decoding=0, capacity=512) == 512
    # no decode-only step measured yet: 20 decoding tokens count as 20 prompt tokens
    assert budget.prompt_tokens(num_decoding=20, capacity=492) == 30  # (100 - 40) / 2


def test_a_target_leaves_room_for_the_decode_step() -> None:
    budget = StepBudget(max_step_ms=120)
    budget.record(num_decoding=8, num_prompt=0, decode_s=0.060)
    budget.record(num_decoding=8, num_prompt=100, decode_s=0.260)  # 2 ms a token beside them
    assert budget.prompt_tokens(num_decoding=8, capacity=504) == 30  # 60 ms spare / 2 ms
    fixed = StepBudget(max_step_ms=460, decode_step_s=0.060, prompt_token_s=0.002)
    assert fixed.prompt_tokens(num_decoding=8, capacity=504) == 200
    slow = StepBudget(max_step_ms=100, decode_step_s=0.060, prompt_token_s=1.0)
    assert slow.prompt_tokens(num_decoding=8, capacity=504) == MIN_PROMPT_TOKENS
    assert slow.prompt_tokens(num_decoding=8, capacity=5) == 5  # the batch's room bounds it
