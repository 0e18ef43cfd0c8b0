"""The prefix cache's moves on a real llama.cpp context: every path gives the same logits.

A "request" here is: place the prompt, prefill what was not reused, read the
logits of the last prompt token, leave the slot. Each reuse path (in place,
copied from another slot, restored from host memory, several placements
before one decode) must give the logits a cold prefill gives.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest

from speculative.llama import LlamaContext, LlamaModel
from speculative.prefix_cache import LONG_READ, MIN_KEEP, Placement, PrefixCache
from tests.conftest import REPO

MODEL = REPO / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf"
NUM_SLOTS = 4


@pytest.fixture(scope="module")
def model() -> Iterator[LlamaModel]:
    m = LlamaModel(MODEL)
    yield m
    m.close()


@pytest.fixture(params=[False, True], ids=["resident", "kv_release"])
def ctx(model: LlamaModel, request: pytest.FixtureRequest) -> Iterator[LlamaContext]:
    # kv_release: an emptied slot's pages go back to the OS; no path may read them after
    c = LlamaContext(
        model,
        ctx_per_seq=512,
        num_seqs=NUM_SLOTS,
        batch_tokens=256,
        threads=1,
        release_kv=request.param,
        release_after_s=0.0,  # at once: the strictest case
    )
    assert (c.pages is not None) == request.param
    yield c
    c.close()


def text_tokens(model: LlamaModel, topic: str, n: int) -> list[int]:
    words = " ".join(f"{topic} fact {i} is worth remembering." for i in range(n))
    return model.tokenize(words)[:n]


def prefill(ctx: LlamaContext, seq: int, tokens: list[int], start: int) -> np.ndarray:
    """Feed tokens[start:] to ``seq``; the logits after the last one."""
    pending = tokens[start:]
    assert pending, "a placement always leaves a token to evaluate"
    positions = list(range(start, len(tokens)))
    ctx.decode(pending, positions, [seq] * len(pending), [False] * (len(pending) - 1) + [True])
    return ctx.logits(len(pending) - 1).copy()


class Runner:
    def __init__(self, ctx: LlamaContext, host_mb: int) -> None:
        self.ctx = ctx
        self.cache = PrefixCache(ctx, host_mb << 20, mirror=None)
        self.free = list(range(NUM_SLOTS))

    def run(self, prompt: list[int], hold: bool = False) -> tuple[str, int, np.ndarray]:
        placed = self.cache.place(prompt, self.free)
        logits = prefill(self.ctx, placed.seq_id, prompt, placed.num_reused)
        self.cache.after_decode()
        read_long = placed.read_long or len(prompt) - placed.num_reused >= LONG_READ
        if not hold:
            self.release(placed.seq_id, prompt, read_long)
        return placed.source, placed.seq_id, logits

    def release(self, seq_id: int, prompt: list[int], read_long: bool = True) -> None:
        self.cache.keep(seq_id, prompt, read_long=read_long)
        self.free = sorted([*self.free, seq_id])

    def wave(self, prompts: list[list[int]]) -> list[Placement]:
        """Place every prompt (each told how many follow), read them all before one
        ``after_decode``, then leave their slots."""
        placed = [
            self.cache.place(p, self.free, coming=len(prompts) - 1 - i)
            for i, p in enumerate(prompts)
        ]
        for pl, p in zip(placed, prompts, strict=True):
            prefill(self.ctx, pl.seq_id, p, pl.num_reused)
        self.cache.after_decode()
        for pl, p in zip(placed, prompts, strict=True):
            self.release(pl.seq_id, p)
        return placed


def cold(ctx: LlamaContext, prefix: list[int], rest: list[int]) -> np.ndarray:
    """Logits after ``prefix`` then ``rest`` on an empty slot, fed in the same two decodes
    as the cached path: a prompt of 64 tokens or more read in one decode differs (up to
    ~0.4 here), since llama.cpp's CPU flash attention keeps a long decode's queries in
    F32 (its tiled kernel) and rounds a short one's to F16."""
    seq = NUM_SLOTS - 1
    ctx.drop(seq)
    prefill(ctx, seq, prefix, 0)
    logits = prefill(ctx, seq, prefix + rest, len(prefix))
    ctx.drop(seq)
    return logits


def same(a: np.ndarray, b: np.ndarray) -> bool:
    return int(np.argmax(a)) == int(np.argmax(b)) and bool(np.allclose(a, b, atol=1e-3))


def test_in_place_copy_and_host_restore_give_cold_logits(
    ctx: LlamaContext, model: LlamaModel
) -> None:
    a = text_tokens(model, "river", 120)
    b = text_tokens(model, "forest", 120)
    expected = {name: cold(ctx, p, [13]) for name, p in (("a", a), ("b", b))}
    runner = Runner(ctx, host_mb=64)
    assert runner.run(a)[0] == "none"
    source, seq, logits = runner.run([*a, 13])  # same slot, longer prompt
    assert (source, seq) == ("slot", 0) and same(logits, expected["a"])
    # b takes slot 0 and holds it; a's content moves out of its way (to the highest free
    # slot), so a's next request takes slot 1 and copies its prefix from there
    _, held, _ = runner.run(b, hold=True)
    source, seq, logits = runner.run([*a, 13])
    assert source == "copy" and seq != held and same(logits, expected["a"])
    runner.release(held, b)
    # fill every slot with unrelated content so a and b must leave the KV cache
    for i in range(NUM_SLOTS * 2):
        runner.run(text_tokens(model, f"topic{i}", MIN_KEEP + 8))
    assert runner.cache.stats.num_saves > 0
    source, _, logits = runner.run([*b, 13])
    assert source == "host" and same(logits, expected["b"])


def test_several_placements_before_one_decode(ctx: LlamaContext, model: LlamaModel) -> None:
    """Copies are performed at the next decode: placements in between must not read or
    write a stream that a pending copy involves."""
    prompts = [text_tokens(model, t, 100) for t in ("sea", "hill", "sky")]
    expected = [cold(ctx, p, [13]) for p in prompts]
    runner = Runner(ctx, host_mb=64)
    for p in prompts:
        runner.run(p)
    # three admissions, then one decode for all of them
    placed = [runner.cache.place([*p, 13], runner.free) for p in reversed(prompts)]
    tokens: list[int] = []
    positions: list[int] = []
    seqs: list[int] = []
    wants: list[bool] = []
    for p, pl in zip(reversed(prompts), placed, strict=True):
        full = [*p, 13]
        tokens += full[pl.num_reused :]
        positions += range(pl.num_reused, len(full))
        seqs += [pl.seq_id] * (len(full) - pl.num_reused)
        wants += [False] * (len(full) - pl.num_reused - 1) + [True]
    order = np.argsort(seqs, kind="stable")  # one ascending run of ids, as the executor does
    ctx.decode(
        [tokens[i] for i in order],
        [positions[i] for i in order],
        [seqs[i] for i in order],
        [wants[i] for i in order],
    )
    rows = {seqs[i]: ctx.logits(j).copy() for j, i in enumerate(order) if wants[i]}
    for i, pl in enumerate(placed):
        assert same(rows[pl.seq_id], expected[len(prompts) - 1 - i])
    assert sum(pl.num_reused for pl in placed) > 0


def test_a_prompt_equal_to_the_cache_still_evaluates_one_token(
    ctx: LlamaContext, model: LlamaModel
) -> None:
    prompt = text_tokens(model, "lamp", 80)
    runner = Runner(ctx, host_mb=0)
    runner.run(prompt)
    placed = runner.cache.place(prompt, runner.free)
    assert placed.num_reused == len(prompt) - 1


def test_a_wave_into_full_slots_saves_each_content_once_and_copies_none(
    ctx: LlamaContext, model: LlamaModel
) -> None:
    """A wave of new prompts into slots that all hold finished requests: told how many
    placements follow, each slot's content goes to host memory once, instead of being
    copied into a slot the wave takes next (and then saved from there); and every
    content can still be restored."""
    old = [text_tokens(model, f"old{i}", MIN_KEEP + 16) for i in range(NUM_SLOTS)]
    runner = Runner(ctx, host_mb=64)
    runner.wave(old)
    before = runner.cache.stats.num_copies, runner.cache.stats.num_saves
    placed = runner.wave([text_tokens(model, f"new{i}", 40) for i in range(NUM_SLOTS)])
    assert sorted(pl.seq_id for pl in placed) == list(range(NUM_SLOTS))
    copies = runner.cache.stats.num_copies - before[0]
    saves = runner.cache.stats.num_saves - before[1]
    assert (copies, saves) == (0, NUM_SLOTS)
    expected = cold(ctx, old[2], [13])
    source, _, logits = runner.run([*old[2], 13])
    assert source == "host" and same(logits, expected)


def test_a_short_common_prefix_read_in_short_decodes_is_kept_in_place_bit_for_bit(
    ctx: LlamaContext, model: LlamaModel
) -> None:
    """Prompts that open alike ("Story 7:") share a few tokens: read only in short decodes,
    the slot keeps them for a short prompt (as llama-server keeps a slot's longest
    common prefix), and the logits are exactly a cold read's; what the slot held, long
    enough to keep, still goes elsewhere whole."""
    opening = model.tokenize("Story 7:")
    old = opening + text_tokens(model, "harbour", 30)
    new = opening + text_tokens(model, "meadow", 30)
    shared = next(i for i, (a, b) in enumerate(zip(old, new, strict=False)) if a != b)
    assert 0 < shared < 16 and len(new) < LONG_READ
    seq = NUM_SLOTS - 1
    ctx.drop(seq)
    expected = prefill(ctx, seq, new, 0)
    ctx.drop(seq)
    runner = Runner(ctx, host_mb=64)
    placed = runner.cache.place(old, runner.free)
    for start in range(0, len(old), 8):  # a long content, read a few tokens at a time
        prefill(ctx, placed.seq_id, old[: start + 8], start)
    longer = old + text_tokens(model, "tide", MIN_KEEP)
    for i in range(len(old), len(longer)):  # and decoded one token at a time
        prefill(ctx, placed.seq_id, longer[: i + 1], i)
    runner.release(placed.seq_id, longer, read_long=False)
    source, placed_at, logits = runner.run(new)
    assert (source, placed_at) == ("slot", 0) and np.array_equal(logits, expected)
    assert runner.cache.stats.num_reused_tokens == shared
    assert runner.cache.stats.num_saves + runner.cache.stats.num_copies == 1  # kept whole


def test_a_short_common_prefix_is_read_again_so_the_logits_are_cold_ones(
    ctx: LlamaContext, model: LlamaModel
) -> None:
    """Prompts that open alike share a few tokens, but the slot does not keep them: read
    inside a decode of 64 or more tokens (the old content's), their KV differs from
    the KV a short prompt gives them, and so would the new prompt's logits (by ~1)."""
    opening = model.tokenize("Story 7:")
    old = opening + text_tokens(model, "harbour", MIN_KEEP + 8)
    new = opening + text_tokens(model, "meadow", 30)
    shared = next(i for i, (a, b) in enumerate(zip(old, new, strict=False)) if a != b)
    assert 0 < shared < 16 and len(old) >= 64 > len(new)
    seq = NUM_SLOTS - 1
    ctx.drop(seq)
    expected = prefill(ctx, seq, new, 0)  # one short decode, as a cold request reads it
    ctx.drop(seq)
    runner = Runner(ctx, host_mb=64)
    runner.run(old)
    source, placed_at, logits = runner.run(new)
    assert (source, placed_at) == ("none", 0) and same(logits, expected)
    assert runner.cache.stats.num_reused_tokens == 0


@pytest.mark.parametrize("where", ["slot", "copy", "host"])
def test_a_short_prompt_reads_again_a_long_shared_prefix_read_in_a_long_decode(
    ctx: LlamaContext, model: LlamaModel, where: str
) -> None:
    """A prompt under 64 tokens is read cold in one short decode, so KV read in a decode
    of 64 or more is never exactly its own, however much of it is shared: found in the
    slot, in another slot or in host memory, it is read again (at most 63 tokens of
    work), and the logits are a cold read's to the bit whatever the server held before.
    (A longer prompt still reuses it: ``test_in_place_copy_and_host_restore_...``.)"""
    old = text_tokens(model, "harbour", MIN_KEEP + 8)
    new = old[:30] + text_tokens(model, "meadow", 20)
    assert len(new) < LONG_READ
    seq = NUM_SLOTS - 1
    ctx.drop(seq)
    expected = prefill(ctx, seq, new, 0)
    ctx.drop(seq)
    runner = Runner(ctx, host_mb=64)
    runner.run(old)  # slot 0, in one decode of 72 tokens
    if where == "copy":  # slot 0 busy: ``old`` moves to another slot
        runner.run(text_tokens(model, "quay", 20), hold=True)
    if where == "host":  # every slot overwritten: ``old`` is saved to host memory
        for i in range(NUM_SLOTS * 2):
            runner.run(text_tokens(model, f"topic{i}", MIN_KEEP + 8))
        assert runner.cache.stats.num_saves > 0
    reused = runner.cache.stats.num_reused_tokens
    source, _, logits = runner.run(new)
    assert source == "none" and runner.cache.stats.num_reused_tokens == reused
    assert np.array_equal(logits, expected)


def test_an_idle_executor_saves_ahead_what_the_next_wave_would_save(
    ctx: LlamaContext, model: LlamaModel
) -> None:
    """Idle, with every free slot holding a content worth keeping, the contents are saved
    to host memory one call at a time, lowest slot first (arrivals take the lowest);
    the wave that comes next then places without a save or a copy, and what it
    overwrote is still restored from host memory with a cold read's logits."""
    old = [text_tokens(model, f"old{i}", MIN_KEEP + 16) for i in range(NUM_SLOTS)]
    runner = Runner(ctx, host_mb=64)
    runner.wave(old[:-1])
    assert not runner.cache.save_ahead(runner.free)  # an empty slot is left: nothing to do
    runner.run(old[-1])
    saves = runner.cache.stats.num_saves
    for n in range(1, NUM_SLOTS + 1):
        assert runner.cache.save_ahead(runner.free)
        assert runner.cache.stats.num_saves == saves + n
    assert not runner.cache.save_ahead(runner.free)  # all saved: nothing more
    before = runner.cache.stats.num_copies, runner.cache.stats.num_saves
    runner.wave([text_tokens(model, f"new{i}", 40) for i in range(NUM_SLOTS)])
    assert (runner.cache.stats.num_copies, runner.cache.stats.num_saves) == before
    expected = cold(ctx, old[1], [13])
    source, _, logits = runner.run([*old[1], 13])
    assert source == "host" and same(logits, expected)
