"""``server.serving.finish``: one table of how a reply ended, in every family's words."""

from __future__ import annotations

from batching.request import FinishReason, Request, SamplingParams
from server.serving.finish import WIRE, Ending, Family, ending, finish_reason


def finished(reason: FinishReason, stop_word: str | None = None) -> Request:
    request = Request(model="m", prompt_tokens=[1], params=SamplingParams())
    request.mark_done(reason)
    request.stop_word = stop_word
    return request


def test_every_family_names_every_ending() -> None:
    assert set(WIRE) == set(Family)
    assert all(set(names) == set(Ending) for names in WIRE.values())


async def test_a_limit_wins_over_calls_and_calls_over_a_stop_word() -> None:
    assert ending(finished(FinishReason.LENGTH), has_calls=True) is Ending.LIMIT
    assert ending(finished(FinishReason.STOP, ","), has_calls=True) is Ending.TOOL_CALLS
    assert ending(finished(FinishReason.STOP, ",")) is Ending.STOP_WORD
    assert ending(finished(FinishReason.STOP)) is Ending.END


async def test_each_family_in_its_own_words() -> None:
    word, eos, cut = (
        finished(FinishReason.STOP, ","),
        finished(FinishReason.STOP),
        finished(FinishReason.LENGTH),
    )
    expected = {
        Family.OPENAI: ("stop", "stop", "length"),
        Family.ANTHROPIC: ("stop_sequence", "end_turn", "max_tokens"),
        Family.RESPONSES: ("completed", "completed", "incomplete"),
        Family.OLLAMA: ("stop", "stop", "length"),
        Family.LLAMA_SERVER: ("word", "eos", "limit"),
    }
    for family, names in expected.items():
        assert tuple(finish_reason(family, r) for r in (word, eos, cut)) == names, family
