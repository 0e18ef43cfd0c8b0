"""The eviction choice and keep-alive durations, as pure functions."""

from __future__ import annotations

import pytest

from server.duration import parse_keep_alive
from server.models.memory import Resident, choose_evictions, split_shared
from speculative.footprint import Footprint


def resident(name: str, mb: int, last_used: float, *, evictable: bool = True) -> Resident:
    return Resident(name, mb, last_used, evictable)


def test_fits_without_evicting() -> None:
    assert choose_evictions([resident("a", 100, 1.0)], 100, 300) == []


def test_evicts_least_recently_used_first_and_only_as_many_as_needed() -> None:
    models = [resident("new", 100, 3.0), resident("old", 100, 1.0), resident("mid", 100, 2.0)]
    assert choose_evictions(models, 100, 300) == ["old"]
    assert choose_evictions(models, 200, 300) == ["old", "mid"]


def test_busy_or_pinned_models_are_never_chosen() -> None:
    models = [resident("busy", 100, 1.0, evictable=False), resident("idle", 100, 2.0)]
    assert choose_evictions(models, 100, 200) == ["idle"]
    assert choose_evictions(models, 150, 200) is None  # only evicting "busy" would do


def test_max_models_counts_models_not_bytes() -> None:
    models = [resident("a", 1, 1.0), resident("b", 1, 2.0)]
    assert choose_evictions(models, 1, 10**9, max_models=2) == ["a"]
    assert choose_evictions(models, 1, 10**9, max_models=3) == []


@pytest.mark.parametrize(
    ("value", "seconds"),
    [(0, 0.0), (30, 30.0), (1.5, 1.5), ("5m", 300.0), ("1h30m", 5400.0), ("1s", 1.0),
     ("250ms", 0.25), ("45", 45.0), (-1, None), ("-1", None), ("-5m", None)],
)  # fmt: skip
def test_keep_alive_durations(value: float | str, seconds: float | None) -> None:
    assert parse_keep_alive(value) == seconds


@pytest.mark.parametrize("value", ["", "5x", "m5", "1h 30m", "soon", "1e999"])
def test_bad_keep_alive_names_the_field(value: str) -> None:
    with pytest.raises(ValueError, match=r"^keep_alive: "):
        parse_keep_alive(value)


def test_a_file_two_holders_share_counts_once() -> None:
    """A generator and an embedding context (or a model and another's draft) on one file."""
    generator = Footprint(weights_bytes=100, kv_bytes=50, files={"a.gguf": 100})
    embedder = Footprint(weights_bytes=100, kv_bytes=20, files={"a.gguf": 100})
    other = Footprint(weights_bytes=70, kv_bytes=5, files={"b.gguf": 70})
    exclusive, shared = split_shared({"gen": generator, "emb": embedder, "other": other})
    assert exclusive == {"gen": 50, "emb": 20, "other": 75} and shared == 100
    assert split_shared({"gen": generator}) == ({"gen": 150}, 0)
