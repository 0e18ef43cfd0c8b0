"""Exact-match result cache: the same greedy or seeded request is decoded once.

Only requests whose output is a function of their input qualify: greedy ones,
and sampled ones with a seed (seeded sampling reproduces exactly, see
``speculative.sampling``). The key is a hash of the model's name and file
identity, the prompt's token ids after templating, and every sampling
parameter; whether the request speculates does not change its output and is
not in the key. Entries are bounded by count and bytes (least recently used
dropped first) and expire after a TTL.

A hit is answered with a request object that is already finished, so every
route (JSON, stream, task) serves it the way it serves a decoded one.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import time
from collections import OrderedDict
from dataclasses import dataclass

import orjson

from batching.request import FinishReason, Request, RequestStatus
from server.server_settings import ResultCacheSettings

HIT, MISS, BYPASS = "HIT", "MISS", "BYPASS"


@dataclass(slots=True)
class Entry:
    text: str
    output_tokens: list[int]
    finish_reason: FinishReason
    stop_word: str | None
    stored_at: float
    nbytes: int


class ResultCache:
    def __init__(self, settings: ResultCacheSettings) -> None:
        self.settings = settings
        self._entries: OrderedDict[str, Entry] = OrderedDict()
        self.used_bytes = 0
        self.counts = {HIT: 0, MISS: 0, BYPASS: 0}

    def __len__(self) -> int:
        return len(self._entries)

    def key(self, request: Request, model_identity: str) -> str | None:
        """The request's key, or None when its output is not reproducible."""
        params = request.params
        if not (params.is_greedy or params.seed is not None):
            return None
        if request.num_top_logprobs is not None:  # entries keep text and tokens only
            return None
        sampling = dataclasses.asdict(params)
        if params.is_greedy:  # these change nothing at temperature 0
            for name in ("seed", "top_k", "top_p", "min_p"):
                sampling[name] = None
        material = [request.model, model_identity, request.prompt_tokens, sampling, request.grammar]
        return hashlib.sha256(orjson.dumps(material)).hexdigest()

    def serve(self, key: str, request: Request) -> bool:
        """Finish ``request`` from the cache if ``key`` is there (and fresh)."""
        entry = self._entries.get(key)
        if entry is None:
            return False
        if time.monotonic() - entry.stored_at > self.settings.ttl_s:
            self._remove(key)
            return False
        self._entries.move_to_end(key)
        request.output_tokens = list(entry.output_tokens)
        request.text, request.stop_word = entry.text, entry.stop_word
        request.num_cached_tokens = request.num_prompt_tokens
        request.status = RequestStatus.RUNNING
        request.started_at = request.first_token_at = time.monotonic()
        request.mark_done(entry.finish_reason)
        if request.stream is not None:  # a stream replays the text, then ends
            if entry.text:
                request.stream.put_nowait(entry.text)
            request.stream.put_nowait(None)
        request.done.set_result(request)
        return True

    def remember_when_done(self, key: str, request: Request) -> None:
        """Store the result once ``request`` finishes normally."""

        def store(_: asyncio.Future[Request]) -> None:
            if request.status is RequestStatus.FINISHED and request.finish_reason in (
                FinishReason.STOP,
                FinishReason.LENGTH,
            ):
                self._put(key, request)

        request.done.add_done_callback(store)

    def _put(self, key: str, request: Request) -> None:
        nbytes = len(request.text.encode()) + 8 * len(request.output_tokens) + 128
        if key in self._entries:
            self._remove(key)
        entry = Entry(
            request.text,
            list(request.output_tokens),
            request.finish_reason or FinishReason.STOP,
            request.stop_word,
            time.monotonic(),
            nbytes,
        )
        self._entries[key] = entry
        self.used_bytes += nbytes
        budget = self.settings.max_mb * (1 << 20)
        while self._entries and (
            len(self._entries) > self.settings.max_entries or self.used_bytes > budget
        ):
            self._remove(next(iter(self._entries)))

    def _remove(self, key: str) -> None:
        self.used_bytes -= self._entries.pop(key).nbytes
