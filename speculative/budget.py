"""How many prompt tokens a step may carry beside the sequences that are decoding.

Every running sequence shares each step, so a step that feeds 512 prompt tokens
stalls every stream for as long as those take (on 2 cores: ~2 s between two tokens
of every stream whenever a ~1,000-token prompt arrived). Here a step with
decoding sequences carries only as many prompt tokens as keep it near a target
time; a long prompt is then fed over several steps while the others keep their
pace (vLLM and SGLang call this chunked prefill with a token budget).

The costs are measured as the executor runs, not assumed: an exponential average
of a decode-only step's time, and of the marginal time of one prompt token
(``record``). The target is the model's ``max_step_ms`` when set; ``0`` turns the
budget off (prompt tokens fill the batch's room). Unset (the default), the target
follows the host and the load: ``AUTO_STALL`` times a decode-only step, so the
gap between two tokens of a stream stays within 3x its usual pace while a prompt
is read, and that grows with how long the oldest prompt being read has waited
(``AUTO_GROW_S``), so a box that gets more prompt tokens than that share can read
still keeps up instead of queueing them without end. A fixed target does not grow:
who sets one asks for even gaps first. With nothing decoding, a prompt gets the
whole step.

The automatic target also weighs who waits on each side. Reading a prompt costs the
same compute however it is cut, and every running stream pays all of it either way:
cutting it only spreads the stall into even gaps, and each cut adds a step of
waiting to the requests that wait for its first token (the prompt's own, and the
arrivals that will copy it: ``speculative.sharing``). Even gaps are worth that for many
streams beside one long prompt; for eight chat turns sharing a system prompt, with one
reply streaming, it made the read they all wait on crawl (Sapphire Rapids, 2 cores,
2026-12-07: the whole chat workload 1.31x slower, first turns' TTFT 1.9x). So the
target grows with the requests waiting on the read at the head of the line per
decoding stream, where there are more of the former. Prompts behind the head wait for
their turn whatever the step carries: counting them too read a burst of seven
independent chat turns in one long step, every first token after the whole burst.

Several prompts share the budget by ``shortest_first``: higher priorities first,
and within a priority the one with the fewest tokens left, a prompt's count halved
for every ``AGING_S`` it has waited. A short prompt is then never starved behind a
long one, and one that arrived while another was half read waits for that one to
finish rather than slowing it: the first to finish is the first to answer, where
equal shares would make both answer late. Aging keeps a long prompt from waiting
forever behind a run of shorter ones.
"""

from __future__ import annotations

from dataclasses import dataclass

from speculative.prefix_cache import LONG_READ

# The smallest part a prompt is cut into, and what every step may carry however slow the
# host. A sequence's chunk shorter than llama.cpp's flash-attention tile (LONG_READ) is
# attended one query at a time: about 1.8x the cost per token of a chunk of 64 or more
# (AMD EPYC, 2 cores, SmolLM2 Q8_0, 2026-12-07, 600 tokens cached, beside 8 streams:
# 5.1-6.0 ms a token for parts of 16-48 tokens, 2.8-3.0 ms for 96-256). Cut in 16-45
# token parts, a burst of 68-token chat turns cost 4-5.6 ms a token.
MIN_PROMPT_TOKENS = LONG_READ
# A prompt with fewer tokens left than two such parts is never cut: one part would be slow.
SHORT_PROMPT_TOKENS = 2 * MIN_PROMPT_TOKENS - 1
SMOOTHING = 0.2  # weight of the newest step in the averages
AUTO_STALL = 3.0  # automatic target: a step with prompt tokens, in decode-only steps
AUTO_GROW_S = 8.0  # ... times 1 + (the oldest prompt's wait / this)
LARGE_CHUNK = 128  # prompt tokens in a step from which a token's cost is measured
AGING_S = 10.0  # a waiting prompt's tokens left count half as much every so often


@dataclass(slots=True)
class StepBudget:
    max_step_ms: float | None = None  # None: automatic; 0: off, prompt tokens fill the batch
    decode_step_s: float | None = None  # average step with no prompt tokens
    prompt_token_s: float | None = None  # average marginal cost of one prompt token
    chunk_overhead_s: float = 0.0  # what a prompt chunk beside decoding costs besides its tokens

    def record(self, num_decoding: int, num_prompt: int, decode_s: float) -> None:
        """One step's cost: ``num_prompt`` prompt tokens beside ``num_decoding`` sequences.

        A step with a prompt chunk beside decoding sequences costs more than the two
        parts: with a KV stream per sequence llama.cpp splits it into one ubatch of a
        token per sequence and one of the rest, each reading every weight, and the
        decoding sequences attend over as many cells as the longest stream in their
        ubatch (measured on the server, AMD EPYC, 2 cores, smollm2 Q8_0, 2026-12-03:
        30-120 ms beside a 31-40 ms decode step). So a token's cost comes from large
        chunks, where that is small beside the tokens, and the fixed part from the
        chunks beside decoding sequences."""
        if num_prompt == 0:
            if num_decoding:
                self.decode_step_s = _average(self.decode_step_s, decode_s)
            return
        base = (self.decode_step_s or 0.0) if num_decoding else 0.0
        extra = max(decode_s - base, 0.0)
        if num_prompt >= LARGE_CHUNK or self.prompt_token_s is None:
            self.prompt_token_s = _average(self.prompt_token_s, extra / num_prompt)
        elif num_decoding and self.decode_step_s is not None:
            overhead = max(extra - num_prompt * self.prompt_token_s, 0.0)
            self.chunk_overhead_s = _average(self.chunk_overhead_s, overhead)

    def prompt_tokens(
        self, num_decoding: int, capacity: int, waited_s: float = 0.0, num_waiting: int = 1
    ) -> int:
        """Prompt tokens the next step may carry, of ``capacity`` left in the batch, when
        the oldest prompt being read has waited ``waited_s`` since it arrived and
        ``num_waiting`` requests wait on the read at the head of the line."""
        if self.max_step_ms == 0 or num_decoding == 0 or not self.prompt_token_s:
            return capacity  # off, nobody to stall, or nothing measured yet
        # until a decode-only step is measured, a decoding token counts as a prompt token
        decode_s = self.decode_step_s or num_decoding * self.prompt_token_s
        if self.max_step_ms is None:
            target_s = AUTO_STALL * decode_s * (1 + waited_s / AUTO_GROW_S)
            target_s *= max(1.0, num_waiting / num_decoding)
        else:
            target_s = self.max_step_ms / 1000
        spare = target_s - decode_s - self.chunk_overhead_s
        # never past the batch's room, however small that is
        return min(max(int(spare / self.prompt_token_s), MIN_PROMPT_TOKENS), capacity)

    def as_dict(self) -> dict[str, float | str | None]:
        def ms(s: float | None) -> float | None:
            return None if s is None else round(s * 1000, 3)

        return {
            "max_step_ms": "auto" if self.max_step_ms is None else self.max_step_ms,
            "decode_step_ms": ms(self.decode_step_s),
            "prompt_token_ms": ms(self.prompt_token_s),
            "chunk_overhead_ms": ms(self.chunk_overhead_s),
        }


def shortest_first(
    needs: list[int],
    priorities: list[int],
    waits: list[float],
    budget: int,
    readers: list[int] | None = None,
    room: int | None = None,
) -> list[int]:
    """Split ``budget`` tokens among prompts needing ``needs``, having waited ``waits``
    seconds: higher priorities first, then the fewest tokens left (aged) per request
    waiting on that read (``readers``: itself and those that copy from it), each taking
    what it needs of what is left. The first in line always moves: whole where it is
    too short to cut (``SHORT_PROMPT_TOKENS``) and fits the batch's ``room``, else as
    much as the budget allows.

    Shortest first, one at a time, is what minimises the waits for a first token (a
    burst of eight ~55-token chat turns read together gave all eight their first token
    after the whole burst; read in line, half of them have it by mid-burst), and the
    budget decides how many go together: while streams decode, a step carries what keeps
    it near its target, so a burst is read in line and the streams keep their pace."""
    room = budget if room is None else room
    shares = [0] * len(needs)
    for rank, i in enumerate(in_line(needs, priorities, waits, readers)):
        shares[i] = efficient_part(needs[i], budget)
        if rank == 0 and shares[i] == 0:  # the first always moves, within the room
            is_short = needs[i] <= SHORT_PROMPT_TOKENS and needs[i] <= room
            shares[i] = needs[i] if is_short else min(needs[i], budget)
        budget -= shares[i]
    return shares


def in_line(
    needs: list[int], priorities: list[int], waits: list[float], readers: list[int] | None = None
) -> list[int]:
    """The order prompts are read in (indices): higher priorities first, then the fewest
    tokens left, a count halved for every ``AGING_S`` waited and divided by the requests
    that wait on that read (``readers``: itself and those that copy from it)."""
    per = readers or [1] * len(needs)
    return sorted(
        range(len(needs)),
        key=lambda i: (-priorities[i], needs[i] * 0.5 ** (waits[i] / AGING_S) / per[i]),
    )


def efficient_part(need: int, room: int, least: int = MIN_PROMPT_TOKENS) -> int:
    """How much of a prompt needing ``need`` tokens to feed in ``room``: all of it, or a
    part of at least ``least`` that leaves at least ``least`` (both halves then read at
    the tile's speed), else nothing this step."""
    if need <= room:
        return need
    part = min(room, need - least)
    return part if part >= least else 0


def _average(old: float | None, new: float) -> float:
    return new if old is None else (1 - SMOOTHING) * old + SMOOTHING * new
