"""Prompt-prefix reuse: a finished sequence leaves its KV behind for the next request.

Each of the context's sequence slots (one KV stream each) holds, while no
request runs in it, the tokens of the last request that ran there. A new
request takes the lowest free slot T (running sequences must form one dense,
ascending run of ids: llama.cpp runs a sparse batch about 2x slower) and
reuses the longest prefix of its prompt found

* in T itself: the cached tail past the common prefix is trimmed;
* in another idle slot S: S is copied into T inside the KV cache
  (``llama_memory_seq_cp``; llama.cpp performs the copy at the next decode,
  about 0.5 ms for 2k tokens here), then trimmed;
* in the host-memory store: the state saved with ``llama_state_seq_get_data``
  is restored into T (6 ms for 2k tokens against 28 s of prefill on a busy
  2-core box: ``python -m bench.prefix_state``).

At least one prompt token is always left to evaluate, so sampling has logits.
Before T is overwritten, what it held moves to the idle slot that matters
least (an empty one, else the least recently used, whose own content is
spilled to the host store), so idle caches drift to high ids and running
sequences keep the low ones. An idle executor makes the saves that the next
arrivals would make ahead of them (``save_ahead``).

Copies between streams are deferred by llama.cpp to the next decode, so until
then a copy's destination holds stale data and its source must not change:
``_incoming`` and ``_outgoing`` name those slots, and no immediate state read
or write touches them (the content is then dropped rather than corrupted).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import numpy.typing as npt

from batching.faults import FAULTS
from speculative.llama import LlamaContext

MIN_REUSE = 16  # shorter common prefixes are not worth a copy or a restore
MIN_KEEP = 64  # shorter slot contents are not worth moving or saving
# A decode that reads this many tokens of one sequence takes llama.cpp's tiled CPU flash
# attention (GGML_FA_TILE_Q), F32 queries where shorter reads round them to F16: KV read
# both ways differs (up to ~1 logit downstream), KV read only in shorter decodes does not.
LONG_READ = 64
State = npt.NDArray[np.uint8]


class Mirror(Protocol):
    """A second context with the same sequence ids (the draft model) that follows along."""

    def copy(self, src: int, dst: int) -> None: ...

    def trim(self, seq_id: int, keep: int) -> None: ...


@dataclass(slots=True)
class Content:
    tokens: npt.NDArray[np.int32]  # KV positions 0..n-1 hold these tokens
    used_at: float = field(default_factory=time.monotonic)
    read_long: bool = False  # some of it was read in a decode of LONG_READ tokens or more
    saved: bool = False  # a copy is in the host store already (``save_ahead``)


@dataclass(slots=True)
class Placement:
    seq_id: int
    num_reused: int  # leading prompt tokens whose KV is already in place
    source: str  # "slot", "copy", "host" or "none"
    read_long: bool = False  # the reused KV may hold tokens read in a long decode


@dataclass(slots=True)
class PrefixStats:
    num_reused_tokens: int = 0
    num_hits: int = 0  # requests that reused at least MIN_REUSE tokens (or any, in place)
    num_lookups: int = 0
    num_copies: int = 0
    num_saves: int = 0
    num_restores: int = 0
    host_bytes: int = 0
    host_entries: int = 0


def common_prefix(a: npt.NDArray[np.int32], b: npt.NDArray[np.int32]) -> int:
    n = min(len(a), len(b))
    differs = np.flatnonzero(a[:n] != b[:n])
    return int(differs[0]) if differs.size else n


class HostStore:
    """Saved sequence states in host memory, least recently used evicted past ``budget``."""

    def __init__(self, budget_bytes: int) -> None:
        self.budget = budget_bytes
        self.used = 0
        self._entries: OrderedDict[bytes, tuple[npt.NDArray[np.int32], State]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def best(self, prompt: npt.NDArray[np.int32]) -> tuple[bytes | None, int]:
        best_key, best_len = None, 0
        for key, (tokens, _) in self._entries.items():
            n = common_prefix(tokens, prompt)
            if n > best_len:
                best_key, best_len = key, n
        return best_key, best_len

    def get(self, key: bytes) -> State:
        self._entries.move_to_end(key)
        return self._entries[key][1]

    def put(self, tokens: npt.NDArray[np.int32], state: State) -> None:
        if state.nbytes > self.budget:
            return
        # an entry whose tokens start the new one's adds nothing
        for key, (old, _) in list(self._entries.items()):
            if len(old) <= len(tokens) and common_prefix(old, tokens) == len(old):
                self._remove(key)
        key = tokens.tobytes()
        if key in self._entries:
            self._remove(key)
        self._entries[key] = (tokens, state)
        self.used += state.nbytes
        while self.used > self.budget:
            self._remove(next(iter(self._entries)))

    def _remove(self, key: bytes) -> None:
        _, state = self._entries.pop(key)
        self.used -= state.nbytes


class PrefixCache:
    def __init__(
        self,
        ctx: LlamaContext,
        host_budget_bytes: int,
        mirror: Mirror | None,
        *,
        enabled: bool = True,
    ) -> None:
        self.is_enabled = enabled
        self._ctx = ctx
        self._mirror = mirror
        self._idle: dict[int, Content] = {}  # slot -> what its KV holds; free slots only
        self._host = HostStore(host_budget_bytes)
        self._incoming: set[int] = set()  # destinations of copies not yet performed
        self._outgoing: set[int] = set()  # their sources
        self.stats = PrefixStats()

    def place(
        self, prompt: list[int], free: list[int], *, may_reuse: bool = True, coming: int = 0
    ) -> Placement:
        """Take the lowest free slot for ``prompt`` (``free`` is sorted ascending; the slot is
        removed from it) and put the longest cached prefix of the prompt into it.

        ``coming``: how many more prompts are placed right after this one (they take the
        next lowest free slots), so nothing is moved into those slots only to be moved
        out again: a wave of 16 prompts into 16 slots that all held finished requests
        made 16 saves and 15 copies (30-46 ms of admission here with ``kv_release``, where
        a copy goes through the state API) where 16 saves do (18-25 ms measured)."""
        target = free.pop(0)
        stay_idle = free[coming:]  # where what ``target`` holds may be moved
        FAULTS.check("place_error")
        self.stats.num_lookups += 1
        want = np.asarray(prompt, dtype=np.int32)
        limit = len(prompt) - 1  # one token left to evaluate: sampling needs its logits
        source, from_slot = target, 0
        own_n = 0  # what ``target`` itself holds of the prompt
        may_reuse = may_reuse and self.is_enabled
        # A prompt this short is read cold in one short decode, so KV read in a long one
        # is never exactly its own: it is read again (at most LONG_READ - 1 tokens), and
        # its text does not depend on what earlier requests left behind.
        short = len(prompt) < LONG_READ
        if may_reuse:
            for slot in [target, *free]:
                if (content := self._idle.get(slot)) is not None and not (
                    short and content.read_long
                ):
                    n = min(common_prefix(content.tokens, want), limit)
                    own_n = n if slot == target else own_n
                    if n > from_slot or (n == from_slot and slot == target):
                        source, from_slot = slot, n
        # (how a saved state was read is not kept: assume the worst)
        host_key, from_host = self._host.best(want) if may_reuse and not short else (None, 0)
        from_host = min(from_host, limit)
        own = self._idle.get(target)
        # In place, a short common prefix (prompts that open alike: "<|im_start|>user\n",
        # "Story 12: ") is kept as llama-server keeps a slot's longest common prefix, but
        # only where it is exactly what reading the prompt cold gives: read in short
        # decodes only, for a prompt short enough to be read in one. A 3-token chat opening
        # kept from a long chat moved the next prompt's logits by up to ~1 (2026-12-06),
        # and seeded replies then depended on what the slot held before. For a longer
        # prompt, from MIN_REUSE tokens a prefix is worth that caveat (llama-server's too).
        # Elsewhere (another slot, host memory) only a prefix worth a copy counts.
        if own is not None:
            exact = not own.read_long and short
            keep = own_n if own_n >= MIN_REUSE or exact else 0
            elsewhere = max(from_slot if source != target else 0, from_host)
            if (keep or len(own.tokens) < MIN_KEEP) and (
                keep >= elsewhere or elsewhere < MIN_REUSE
            ):
                del self._idle[target]
                if len(own.tokens) - keep >= MIN_KEEP:  # a long tail would be lost: keep a copy
                    self._preserve(target, own, stay_idle, keep_from=None)
                self._trim(target, keep)
                return self._placed(target, keep, "slot", read_long=own.read_long)
        if from_slot >= max(from_host, MIN_REUSE):
            read_long = self._idle[source].read_long
            self._evict(target, stay_idle, keep_from=source)
            self._copy(source, target)
            self._trim(target, from_slot)
            return self._placed(target, from_slot, "copy", read_long=read_long)
        if from_host >= MIN_REUSE and host_key is not None:
            state = self._host.get(host_key)  # before saving the target can evict it
            self._evict(target, stay_idle, keep_from=None, may_copy=False)
            if target not in self._incoming | self._outgoing:
                self._ctx.drop(target)
                if self._ctx.restore(state, target):
                    self._mirror_drop(target)  # the draft model recomputes its copy
                    self._trim(target, from_host, mirror=False)
                    self.stats.num_restores += 1
                    return self._placed(target, from_host, "host", read_long=True)
        else:
            self._evict(target, stay_idle, keep_from=None)
        self._ctx.drop(target)
        self._mirror_drop(target)
        return self._placed(target, 0, "none")

    def share(self, src: int, dst: int, keep: int, had: int = 0) -> None:
        """Give the placed slot ``dst``, which holds ``had`` positions of its prompt, the
        first ``keep`` positions of the running ``src`` (the other choices of an n > 1
        request copy the first one's prompt; an arrival copies a prefix being read:
        ``speculative.sharing``)."""
        self._copy(src, dst)
        self._trim(dst, keep)
        self.stats.num_reused_tokens += keep - had

    def keep(self, seq_id: int, tokens: list[int], *, read_long: bool = True) -> None:
        """A request left ``seq_id``, whose KV holds ``tokens`` (positions 0..n-1);
        ``read_long``: some were read in a decode of ``LONG_READ`` tokens or more."""
        if tokens and self.is_enabled:
            self._idle[seq_id] = Content(np.asarray(tokens, dtype=np.int32), read_long=read_long)
        else:
            self.forget(seq_id)

    def forget(self, seq_id: int) -> None:
        """The slot's KV is not to be trusted (a failed decode): empty it."""
        self._idle.pop(seq_id, None)
        self._ctx.drop(seq_id)
        self._mirror_drop(seq_id)

    def save_ahead(self, free: list[int]) -> bool:
        """Save now, while the executor is idle, what the next request would save before
        taking its slot; whether one was saved (call again while idle for the next).

        Arrivals take the lowest free slots, and where every free slot holds a content
        (no empty one to move it into), each such content worth keeping is saved to host
        memory first: 16 saves, 21-23 ms of a c=16 wave's admission before its prefill
        (AMD EPYC, 2 cores, 2026-12-06). Done ahead, the wave only overwrites them."""
        if self._host.budget <= 0 or any(slot not in self._idle for slot in free):
            return False
        for slot in free:
            content = self._idle[slot]
            if not content.saved and len(content.tokens) >= MIN_KEEP:
                return self._save(slot, content)
        return False

    def idle_cells(self) -> int:
        """KV cells the idle slots' contents hold (with a shared pool, an upper bound:
        a copy shares its source's cells)."""
        return sum(len(c.tokens) for c in self._idle.values())

    def release(self, cells: int) -> int:
        """Give at least ``cells`` back to a shared KV pool if the idle contents hold that
        many, least recently used first, each saved to host memory when worth keeping;
        the cells freed (an upper bound, as ``idle_cells``)."""
        freed = 0
        for slot in sorted(self._idle, key=lambda s: self._idle[s].used_at):
            if freed >= cells:
                break
            content = self._idle.pop(slot)
            self._save(slot, content)
            self._ctx.drop(slot)
            self._mirror_drop(slot)
            freed += len(content.tokens)
        return freed

    def after_decode(self) -> None:
        """llama.cpp performed the pending copies at the start of the decode."""
        self._incoming.clear()
        self._outgoing.clear()

    # -- moving contents around ------------------------------------------------

    def _placed(
        self, seq_id: int, reused: int, source: str, *, read_long: bool = False
    ) -> Placement:
        self.stats.num_reused_tokens += reused
        self.stats.num_hits += reused > 0
        self.stats.host_bytes = self._host.used
        self.stats.host_entries = len(self._host)
        return Placement(seq_id, reused, source, read_long=reused > 0 and read_long)

    def _evict(
        self, target: int, free: list[int], *, keep_from: int | None, may_copy: bool = True
    ) -> None:
        """Preserve what ``target`` holds before it is overwritten (``free``: the free slots
        that stay idle for now)."""
        content = self._idle.pop(target, None)
        if content is not None and len(content.tokens) >= MIN_KEEP:
            self._preserve(target, content, free, keep_from=keep_from, may_copy=may_copy)

    def _preserve(
        self,
        slot: int,
        content: Content,
        free: list[int],
        *,
        keep_from: int | None,
        may_copy: bool = True,
    ) -> None:
        """Move ``slot``'s content to the least valuable other idle slot (not ``keep_from``,
        the source of the coming copy), or save it to host memory."""
        if may_copy:
            spare = [s for s in free if s != keep_from]
            empty = [s for s in spare if s not in self._idle]
            if empty:
                victim = empty[-1]  # the highest id: caches live above the running ids
            elif spare:
                victim = min(spare, key=lambda s: self._idle[s].used_at)
                self._save(victim, self._idle.pop(victim))
            else:
                victim = None
            if victim is not None:
                self._copy(slot, victim)
                self._idle[victim] = content
                return
        self._save(slot, content)

    def _save(self, slot: int, content: Content) -> bool:
        """Put ``slot``'s content in the host store (unless it is there already, too short
        to keep, or stale until the next decode); whether it was saved now."""
        if content.saved or len(content.tokens) < MIN_KEEP or self._host.budget <= 0:
            return False
        if slot in self._incoming:
            return False  # stale until the next decode: not readable now
        self._ctx.drop(slot, len(content.tokens))  # only what the content says it holds
        self._host.put(content.tokens, self._ctx.save(slot))
        content.saved = True
        self.stats.num_saves += 1
        return True

    def _copy(self, src: int, dst: int) -> None:
        self._ctx.copy(src, dst)
        self._incoming.add(dst)
        self._outgoing.add(src)
        self.stats.num_copies += 1
        if self._mirror is not None:
            self._mirror.copy(src, dst)

    def _trim(self, seq_id: int, keep: int, *, mirror: bool = True) -> None:
        self._ctx.drop(seq_id, keep)
        if mirror and self._mirror is not None:
            self._mirror.trim(seq_id, keep)

    def _mirror_drop(self, seq_id: int) -> None:
        if self._mirror is not None:
            self._mirror.trim(seq_id, 0)
