"""The n-gram lookup and the adaptive policy as pure logic."""

from __future__ import annotations

from speculative.adaptive import SpeculationPolicy
from speculative.proposers import lookup


def test_lookup_continues_the_latest_earlier_match() -> None:
    tokens = [1, 2, 3, 4, 9, 1, 2, 3, 5, 6, 7, 1, 2, 3]
    assert lookup(tokens, 3, max_n=3, min_n=1) == [5, 6, 7]  # the latest "1 2 3" wins


def test_lookup_prefers_longer_ngrams_and_respects_k() -> None:
    tokens = [7, 3, 8, 8, 2, 3, 4, 4, 4, 2, 3]
    assert lookup(tokens, 2, max_n=2, min_n=1) == [4, 4]  # "2 3" -> 4 4, not "3" -> 8


def test_lookup_finds_nothing_in_fresh_text() -> None:
    assert lookup([1, 2, 3, 4, 5], 4, max_n=3, min_n=2) == []


def test_lookup_ignores_matches_across_token_boundaries() -> None:
    # int32 little-endian: 256, 0 holds the bytes of 1 at an odd offset
    assert lookup([5, 256, 0, 1], 1, max_n=1, min_n=1) == []
    assert lookup([1, 7, 256, 0, 1], 1, max_n=1, min_n=1) == [7]


def test_draft_length_follows_acceptance_and_pauses_on_failure() -> None:
    policy = SpeculationPolicy(max_draft=4, max_batch=2, min_acceptance=0.3, pause=2)
    policy.gate.num_on = policy.gate.num_off = 100  # judged already: speculation pays
    policy.gate.on_cost, policy.gate.off_cost = 1.0, 2.0
    policy.gate.num_steps = 50  # outside a probe
    assert policy.draft_length(0, True, 1) == 4
    policy.record(0, drafted=4, accepted=1)
    assert policy.draft_length(0, True, 1) == 2
    for _ in range(6):
        policy.record(0, drafted=2, accepted=0)
    assert policy.draft_length(0, True, 1) == 0  # paused
    assert policy.draft_length(0, True, 1) == 0
    assert policy.draft_length(0, True, 1) == 1  # probing again
    assert policy.draft_length(1, True, 3) == 0  # batch too large
    assert policy.draft_length(1, False, 1) == 0  # the request said no
