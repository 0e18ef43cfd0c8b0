"""The one typed object a generation request is, from HTTP to llama.cpp and back.

Ownership: the event loop creates a ``Request`` and reads it after its future
resolves; while it runs, only the executor thread writes its output fields.
``is_cancel_requested`` is the one field both sides touch: the loop sets it,
the executor reads it once per step (a plain bool write is atomic in CPython).

One owner of the ending: the executor and the batcher's backstop (an executor
wedged past a deadline) may both try to finish a running request. Whoever
``claim_answer()`` first writes the ending; the other writes nothing more, so
the reply sent is the state kept. The executor appends output under ``lock``
and checks ``is_answered`` there, so no token lands after the backstop's reply.
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum, StrEnum


class RequestStatus(Enum):
    WAITING = "waiting"  # in the batcher's queue
    RUNNING = "running"  # owns a sequence in the executor
    FINISHED = "finished"
    CANCELLED = "cancelled"
    FAILED = "failed"

    @property
    def is_done(self) -> bool:
        return self in (RequestStatus.FINISHED, RequestStatus.CANCELLED, RequestStatus.FAILED)


class FinishReason(StrEnum):
    STOP = "stop"  # end-of-generation token or a stop string
    LENGTH = "length"  # max_tokens or the context is full
    CANCELLED = "cancelled"
    TIMEOUT = "timeout"  # the request's deadline passed
    ERROR = "error"


class Failure(StrEnum):
    """Why a request failed: a bug or llama.cpp error, or a model that cannot serve now."""

    INTERNAL = "internal"  # HTTP 500: this request broke
    UNAVAILABLE = "unavailable"  # HTTP 503: the model's executor died or is stopping; retry


_STATUS_OF = {FinishReason.CANCELLED: "cancelled", FinishReason.ERROR: "failed"}


@dataclass(slots=True, frozen=True)
class SamplingParams:
    """Per-sequence decoding settings; temperature 0 means greedy."""

    max_tokens: int = 128
    temperature: float = 0.8
    top_k: int = 40  # 0 disables
    top_p: float = 0.95  # 1 disables
    min_p: float = 0.05  # 0 disables
    repeat_penalty: float = 1.0  # 1 disables
    frequency_penalty: float = 0.0  # OpenAI's: minus this x count of the token
    presence_penalty: float = 0.0  # OpenAI's: minus this if the token occurred
    repeat_last_n: int = 64  # the window all three penalties look at
    seed: int | None = None
    stop: tuple[str, ...] = ()
    # (token id, bias) pairs added to the logits before everything else, as
    # llama.cpp's logit-bias sampler does; -100 all but bans a token.
    logit_bias: tuple[tuple[int, float], ...] = ()

    @property
    def is_greedy(self) -> bool:
        return self.temperature == 0.0

    @property
    def has_penalties(self) -> bool:
        return (
            self.repeat_penalty != 1.0
            or self.frequency_penalty != 0.0
            or self.presence_penalty != 0.0
        )


@dataclass(slots=True, frozen=True)
class TokenLogprob:
    """One output token's log-probability and the likeliest alternatives at its position,
    from the model's raw distribution (log-softmax of the logits before any sampling
    setting, bias or grammar)."""

    token: int
    logprob: float
    top: tuple[tuple[int, float], ...] = ()  # (token id, logprob), likeliest first


MAX_TOP_LOGPROBS = 20


@dataclass(slots=True)
class ThinkBudget:
    """A think block ended after ``max_tokens`` of it: the executor then emits
    ``close_tokens`` (the close tag) in place of what it samples, and the model answers.

    Executor only, once submitted: ``observe`` sees each output token's text,
    ``next_forced`` is asked before each sample.
    """

    max_tokens: int
    open: str  # the think tags, as text
    close: str
    close_tokens: tuple[int, ...]
    is_open: bool  # inside the block (the prompt may have opened it)
    is_done: bool = False  # closed, by the model or forced, or the reply did not think
    num_tokens: int = 0  # thinking tokens so far
    text: str = ""  # recent output, enough to find a tag
    forced: list[int] = field(default_factory=list)  # close tokens still to emit

    def next_forced(self) -> int | None:
        """The token to emit instead of sampling, if the budget is spent."""
        if self.is_open and not self.is_done and self.num_tokens >= self.max_tokens:
            self.forced, self.is_done = list(self.close_tokens), True
        return self.forced.pop(0) if self.forced else None

    def observe(self, piece: str) -> None:
        """One output token's text (forced ones too)."""
        if self.is_done:
            return
        self.text += piece
        if not self.is_open:  # only a reply that starts with the open tag thinks
            start = self.text.lstrip()
            if start.startswith(self.open):
                self.is_open, self.text = True, start[len(self.open) :]
            elif not self.open.startswith(start):
                self.is_done = True
            return
        self.num_tokens += 1
        if self.close in self.text:
            self.is_done = True
        self.text = self.text[-len(self.close) :]


@dataclass(slots=True, eq=False)
class Request:
    model: str
    prompt_tokens: list[int]
    params: SamplingParams
    id: str = field(default_factory=lambda: uuid.uuid4().hex)
    status: RequestStatus = RequestStatus.WAITING
    output_tokens: list[int] = field(default_factory=list)
    text: str = ""
    finish_reason: FinishReason | None = None
    # The stop string that ended the text (cut off ``text``), set with FinishReason.STOP;
    # None for an end-of-generation token. Routes name it (Anthropic ``stop_sequence``,
    # llama-server ``stopping_word``) without detokenizing the output again.
    stop_word: str | None = None
    error: str | None = None
    failure: Failure | None = None  # set with FinishReason.ERROR
    is_cancel_requested: bool = False
    is_answered: bool = False  # its ending is written: nobody changes it any more
    lock: threading.RLock = field(default_factory=threading.RLock, repr=False)
    # Event loop only: called by ``cancel()`` so a waiting request leaves its queue at once.
    on_cancel: Callable[[Request], None] | None = None
    deadline: float | None = None  # time.monotonic() after which the request stops
    is_speculative: bool = True  # may the model's proposer draft for this request
    cache_prompt: bool = True  # may the prompt start from another request's cached KV
    num_cached_tokens: int = 0  # prompt tokens whose KV was reused, not computed
    num_prefill_steps: int = 0  # decode steps its prompt was fed over
    priority: int = 0  # higher is admitted first (see batching.batcher)
    # GBNF text (llama.cpp's grammar format, root rule ``root``) the output must
    # match; a constrained request does not speculate.
    grammar: str | None = None
    # None: no log-probabilities; k (0..MAX_TOP_LOGPROBS): each output token's
    # logprob plus the k likeliest alternatives, in ``logprobs``.
    num_top_logprobs: int | None = None
    think_budget: ThinkBudget | None = None  # ends a think block after so many tokens
    logprobs: list[TokenLogprob] = field(default_factory=list)  # one per output token
    # Token ids whose raw logprobs at the first output position are wanted (a reranker's
    # "yes" and "no" answers): the executor writes them to ``token_scores``, in order,
    # from the row the first token is sampled from (an ending token included).
    score_tokens: tuple[int, ...] = ()
    token_scores: tuple[float, ...] = ()
    # Another choice of the same n > 1 call, with the same prompt: while both run,
    # this one copies that one's prompt KV instead of computing it again.
    prompt_source: Request | None = None
    num_drafted_tokens: int = 0
    num_accepted_tokens: int = 0
    # time.monotonic() stamps: created, admitted to a sequence, first token, done
    created_at: float = field(default_factory=time.monotonic)
    started_at: float | None = None
    first_token_at: float | None = None
    finished_at: float | None = None
    # Delivery, on the event loop: the future resolves when the request is
    # done; ``stream`` (when set) receives each new piece of text, then None.
    done: asyncio.Future[Request] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )
    # text, or (an int) how many prompt tokens were read, when ``wants_progress``
    stream: asyncio.Queue[str | int | None] | None = None
    wants_progress: bool = False  # stream prompt progress while the prompt is read
    stream_read_at: float = field(default_factory=time.monotonic)  # its reader's last take

    @property
    def num_prompt_tokens(self) -> int:
        return len(self.prompt_tokens)

    @property
    def num_output_tokens(self) -> int:
        return len(self.output_tokens)

    def is_past_deadline(self, now: float) -> bool:
        return self.deadline is not None and now > self.deadline

    def cancel(self) -> None:
        """Ask for the sequence to stop at the next step (its slot is then freed)."""
        self.is_cancel_requested = True
        if self.on_cancel is not None:
            self.on_cancel(self)

    def claim_answer(self) -> bool:
        """True for the one caller that may write this request's ending (see the module)."""
        with self.lock:
            if self.is_answered:
                return False
            self.is_answered = True
            return True

    def mark_done(
        self, reason: FinishReason, error: str | None = None, failure: Failure | None = None
    ) -> None:
        """Record how the request ended (the thread that owns it at that moment calls this)."""
        if reason is FinishReason.ERROR and failure is None:
            failure = Failure.INTERNAL
        self.status = RequestStatus(_STATUS_OF.get(reason, "finished"))
        self.finish_reason = reason
        self.error = error
        self.failure = failure
        self.finished_at = time.monotonic()

    def timings(self) -> dict[str, float | int | None]:
        """Milliseconds spent queued, to first token and in total; decode speed."""

        def ms(start: float | None, end: float | None) -> float | None:
            return None if start is None or end is None else round((end - start) * 1000, 2)

        decode_s = None
        if self.first_token_at and self.finished_at and self.num_output_tokens > 1:
            decode_s = self.finished_at - self.first_token_at
        return {
            "queue_ms": ms(self.created_at, self.started_at),
            "time_to_first_token_ms": ms(self.created_at, self.first_token_at),
            "total_ms": ms(self.created_at, self.finished_at),
            "cached_prompt_tokens": self.num_cached_tokens,
            "computed_prompt_tokens": self.num_prompt_tokens - self.num_cached_tokens,
            "prompt_steps": self.num_prefill_steps,
            "tokens_per_second": (
                round((self.num_output_tokens - 1) / decode_s, 2) if decode_s else None
            ),
        }
