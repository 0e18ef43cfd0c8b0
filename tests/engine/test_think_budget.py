"""The executor's thinking budget: when it forces the close tag (pure, no model)."""

from __future__ import annotations

from batching.request import ThinkBudget

CLOSE = (7, 8, 9)  # token ids of "\n</think>\n\n", say


def budget(max_tokens: int, *, is_open: bool = False) -> ThinkBudget:
    return ThinkBudget(max_tokens, "<think>", "</think>", CLOSE, is_open=is_open)


def run(b: ThinkBudget, pieces: list[str]) -> list[int | None]:
    """What is forced before each piece the model writes."""
    forced = []
    for piece in pieces:
        forced.append(b.next_forced())
        b.observe(piece)
    return forced


def test_spent_budget_forces_the_close_tag_once() -> None:
    b = budget(2)
    assert run(b, ["<th", "ink>", "a", "b", "x", "y", "z", "w"]) == [
        None, None, None, None, 7, 8, 9, None,
    ]  # fmt: skip
    assert b.is_done


def test_forced_open_counts_from_the_first_token() -> None:
    assert run(budget(0, is_open=True), ["a", "b", "c"]) == [7, 8, 9]


def test_no_think_block_or_one_closed_in_time_forces_nothing() -> None:
    assert run(budget(1), ["Hello", "<think>", "a", "b"]) == [None] * 4
    b = budget(3)
    assert run(b, ["<think>", "a", "</think>", "c", "d"]) == [None] * 5 and b.is_done
