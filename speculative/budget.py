"""How many prompt tokens a step may carry beside the sequences that are decoding.

Every running sequence shares each step, so a step that feeds 512 prompt tokens
stalls every stream for as long as those take (on 2 cores: ~2 s between two tokens
of every stream whenever a ~1,000-token prompt arrived). Here a step with
decoding sequences carries only as many prompt tokens as keep it near a target
time; a long prompt is then fed over several steps while the others keep their
pace (vLLM and SGLang call this chunked prefill with a token budget).

The costs are measured as the executor runs, not assumed: an exponential average
of a decode-only step's time, and of the marginal time of one prompt token
(``record``). The target is the model's ``max_step_ms``; unset (the default), a
step takes prompt tokens up to the batch's room, as before. A target of twice a
decode-only step as the default was measured and refused (2026-12-02, 2 cores,
``bench.itl``): the streams' gaps became even (p99 1.2x p50 instead of 26x) but
their median went from 34 to 152 ms, and tokens/s from 80 to 54, since with a
long prompt arriving every 2 s nearly every step carried prompt tokens. With
nothing decoding, a prompt gets the whole step.

Several prompts share the budget by ``fair_shares``: higher priorities first, and
within a priority equal shares (a short prompt is not starved behind a long one:
it finishes in a few steps while the long one keeps going).
"""

from __future__ import annotations

from dataclasses import dataclass

MIN_PROMPT_TOKENS = 16  # per step: a prompt always moves, however slow the host
SMOOTHING = 0.2  # weight of the newest step in the averages


@dataclass(slots=True)
class StepBudget:
    max_step_ms: float | None = None  # None: no target, prompt tokens fill the batch
    decode_step_s: float | None = None  # average step with no prompt tokens
    prompt_token_s: float | None = None  # average marginal cost of one prompt token

    def record(self, num_decoding: int, num_prompt: int, decode_s: float) -> None:
        """One step's cost: ``num_prompt`` prompt tokens beside ``num_decoding`` sequences."""
        if num_prompt == 0:
            if num_decoding:
                self.decode_step_s = _average(self.decode_step_s, decode_s)
            return
        base = (self.decode_step_s or 0.0) if num_decoding else 0.0
        per_token = max(decode_s - base, 0.0) / num_prompt
        self.prompt_token_s = _average(self.prompt_token_s, per_token)

    def prompt_tokens(self, num_decoding: int, capacity: int) -> int:
        """Prompt tokens the next step may carry, of ``capacity`` left in the batch."""
        if self.max_step_ms is None or num_decoding == 0 or not self.prompt_token_s:
            return capacity  # no target, nobody to stall, or nothing measured yet
        # until a decode-only step is measured, a decoding token counts as a prompt token
        decode_s = self.decode_step_s or num_decoding * self.prompt_token_s
        spare = self.max_step_ms / 1000 - decode_s
        # never past the batch's room, however small that is
        return min(max(int(spare / self.prompt_token_s), MIN_PROMPT_TOKENS), capacity)

    def as_dict(self) -> dict[str, float | None]:
        def ms(s: float | None) -> float | None:
            return None if s is None else round(s * 1000, 3)

        return {
            "max_step_ms": self.max_step_ms,
            "decode_step_ms": ms(self.decode_step_s),
            "prompt_token_ms": ms(self.prompt_token_s),
        }


def fair_shares(needs: list[int], priorities: list[int], budget: int) -> list[int]:
    """Split ``budget`` tokens among prompts needing ``needs``: priorities in descending
    order, and within one priority equal shares, a prompt needing less than its share
    taking only what it needs and leaving the rest to the others (water-filling)."""
    shares = [0] * len(needs)
    for priority in sorted(set(priorities), reverse=True):
        members = [i for i, p in enumerate(priorities) if p == priority]
        members.sort(key=needs.__getitem__)
        for rank, i in enumerate(members):
            if budget <= 0:
                return shares
            share = budget // (len(members) - rank) or 1
            shares[i] = min(needs[i], share, budget)
            budget -= shares[i]
    return shares


def _average(old: float | None, new: float) -> float:
    return new if old is None else (1 - SMOOTHING) * old + SMOOTHING * new
