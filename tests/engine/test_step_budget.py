"""The step's prompt-token budget and how prompts share it (pure functions)."""

from __future__ import annotations

from speculative.budget import (
    AGING_S,
    AUTO_GROW_S,
    AUTO_STALL,
    MIN_PROMPT_TOKENS,
    StepBudget,
    efficient_part,
    in_line,
    shortest_first,
)


def test_the_fewest_tokens_left_go_first_and_each_takes_what_it_needs() -> None:
    assert shortest_first([1000, 400], [0, 0], [0.0, 0.0], 100) == [0, 100]
    assert shortest_first([1000, 10, 300], [0, 0, 0], [0.0, 0.0, 0.0], 100) == [0, 10, 90]
    assert shortest_first([5, 7], [0, 0], [0.0, 0.0], 100) == [5, 7]
    # 200 in 156 tokens: a part that leaves the efficient size; 300 gets no slow 20-token part
    assert shortest_first([300, 200, 100], [0, 0, 0], [0.0] * 3, 256) == [0, 136, 100]


def test_a_prompt_is_cut_only_into_parts_of_the_efficient_size() -> None:
    assert MIN_PROMPT_TOKENS == 64  # llama.cpp's flash-attention tile
    assert efficient_part(100, 200) == 100  # it fits: all of it
    assert efficient_part(300, 200) == 200
    assert efficient_part(300, 250) == 236  # what is left is read at the tile's speed too
    assert efficient_part(100, 80) == 0  # 80 + 20 or 64 + 36: one part would be slow
    assert efficient_part(300, 40) == 0
    # the first prompt in line always moves, whatever is left of the step
    assert shortest_first([100], [0], [0.0], 80) == [80]
    assert shortest_first([100, 90], [0, 0], [0.0, 0.0], 120) == [0, 90]


def test_a_short_prompt_first_in_line_goes_whole_within_the_batchs_room() -> None:
    # a 100-token prompt is never cut into 64 + 36 (the 36 would be read at half speed)
    assert shortest_first([100, 110], [0, 0], [0.0, 0.0], 64, room=500) == [100, 0]
    assert shortest_first([100], [0], [0.0], 64, room=90) == [64]  # no room for it whole
    assert shortest_first([300], [0], [0.0], 64, room=500) == [64]  # long: the budget's part


def test_the_line_is_priority_then_fewest_tokens_per_reader() -> None:
    assert in_line([300, 100, 200], [0, 0, 0], [0.0] * 3) == [1, 2, 0]
    assert in_line([300, 100], [1, 0], [0.0, 0.0]) == [0, 1]
    assert in_line([300, 100], [0, 0], [0.0, 0.0], readers=[4, 1]) == [0, 1]  # 75 a reader


def test_higher_priority_first_and_a_long_wait_ages_a_long_prompt_forward() -> None:
    assert shortest_first([1000, 30], [5, 0], [0.0, 0.0], 100) == [100, 0]
    # 1,000 tokens left after 2 x AGING_S count as 250: ahead of a fresh 400
    assert shortest_first([1000, 400], [0, 0], [2 * AGING_S, 0.0], 100) == [100, 0]


def test_off_nothing_decoding_or_nothing_measured_gives_the_whole_step() -> None:
    off = StepBudget(max_step_ms=0, decode_step_s=0.060, prompt_token_s=0.002)
    assert off.prompt_tokens(num_decoding=8, capacity=504) == 504
    budget = StepBudget(max_step_ms=200)
    assert budget.prompt_tokens(num_decoding=8, capacity=504) == 504  # not measured yet
    budget.record(num_decoding=0, num_prompt=500, decode_s=1.0)  # 2 ms a prompt token
    assert budget.prompt_tokens(num_decoding=0, capacity=512) == 512
    # no decode-only step measured yet: 20 decoding tokens count as 20 prompt tokens
    assert budget.prompt_tokens(num_decoding=20, capacity=492) == 80  # (200 - 40) / 2


def test_a_target_leaves_room_for_the_decode_step() -> None:
    budget = StepBudget(max_step_ms=260)
    budget.record(num_decoding=8, num_prompt=0, decode_s=0.060)
    budget.record(num_decoding=8, num_prompt=100, decode_s=0.260)  # 2 ms a token beside them
    assert budget.prompt_tokens(num_decoding=8, capacity=504) == 100  # 200 ms spare / 2 ms
    fixed = StepBudget(max_step_ms=460, decode_step_s=0.060, prompt_token_s=0.002)
    assert fixed.prompt_tokens(num_decoding=8, capacity=504) == 200
    slow = StepBudget(max_step_ms=100, decode_step_s=0.060, prompt_token_s=1.0)
    assert slow.prompt_tokens(num_decoding=8, capacity=504) == MIN_PROMPT_TOKENS
    assert slow.prompt_tokens(num_decoding=8, capacity=5) == 5  # the batch's room bounds it


def test_the_automatic_target_is_a_few_decode_steps_and_grows_as_a_prompt_waits() -> None:
    auto = StepBudget(decode_step_s=0.060, prompt_token_s=0.001)  # the default: no max_step_ms
    assert AUTO_STALL == 3.0
    assert auto.prompt_tokens(num_decoding=8, capacity=504) == 120  # (180 - 60 ms) / 1 ms
    # a prompt that has waited AUTO_GROW_S gets a step of twice that target
    assert auto.prompt_tokens(num_decoding=8, capacity=504, waited_s=AUTO_GROW_S) == 300
    assert auto.prompt_tokens(num_decoding=8, capacity=504, waited_s=60.0) == 504
    # a fixed target stays fixed, however long the prompt waited
    fixed = StepBudget(max_step_ms=180, decode_step_s=0.060, prompt_token_s=0.001)
    assert fixed.prompt_tokens(num_decoding=8, capacity=504, waited_s=60.0) == 120
    assert auto.as_dict()["max_step_ms"] == "auto"


def test_the_automatic_target_grows_with_the_requests_waiting_per_stream() -> None:
    auto = StepBudget(decode_step_s=0.060, prompt_token_s=0.001)
    # one prompt beside 8 streams, or as many waiting as streaming: 3 decode steps
    assert auto.prompt_tokens(num_decoding=8, capacity=504, num_waiting=1) == 120
    assert auto.prompt_tokens(num_decoding=4, capacity=504, num_waiting=4) == 120
    # 7 arrivals (or one prompt and 6 that copy it) beside one stream: 7x the target
    assert auto.prompt_tokens(num_decoding=1, capacity=504, num_waiting=7) == 504
    assert auto.prompt_tokens(num_decoding=4, capacity=504, num_waiting=6) == 210  # 270-60 / 1
    # a fixed target is what its user asked for, whoever waits
    fixed = StepBudget(max_step_ms=180, decode_step_s=0.060, prompt_token_s=0.001)
    assert fixed.prompt_tokens(num_decoding=1, capacity=504, num_waiting=7) == 120


def test_a_prompt_that_others_wait_to_copy_counts_once_per_reader() -> None:
    # 600 tokens read for 4 requests (itself and 3 copying it) go before 300 read for one
    assert shortest_first([300, 600], [0, 0], [0.0, 0.0], 100, [1, 4]) == [0, 100]
    assert shortest_first([300, 600], [0, 0], [0.0, 0.0], 100, [1, 1]) == [100, 0]
    # priorities still come first
    assert shortest_first([300, 600], [1, 0], [0.0, 0.0], 100, [1, 4]) == [100, 0]
