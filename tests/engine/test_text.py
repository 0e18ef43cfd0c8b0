from __future__ import annotations

from speculative.text import TextAssembler


def feed_all(assembler: TextAssembler, pieces: list[bytes]) -> list[str]:
    out = []
    for piece in pieces:
        out.append(assembler.feed(piece))
        if assembler.is_stopped:
            break
    out.append(assembler.finish())
    return out


def test_split_utf8_character_is_emitted_whole() -> None:
    euro = "€".encode()
    out = feed_all(TextAssembler(()), [b"a", euro[:1], euro[1:], b"b"])
    assert out == ["a", "", "€", "b", ""]


def test_stop_string_across_tokens_is_cut_and_never_streamed() -> None:
    assembler = TextAssembler(("STOP",))
    out = feed_all(assembler, [b"hello S", b"TO", b"P more"])
    assert "".join(out) == "hello "
    assert assembler.text == "hello "
    assert assembler.is_stopped
    assert assembler.stop_word == "STOP"
    assert "S" not in "".join(out[:2])


def test_held_back_prefix_is_released_when_it_is_not_a_stop() -> None:
    assembler = TextAssembler(("###",))
    out = feed_all(assembler, [b"a #", b"# b"])
    assert out[0] == "a "
    assert "".join(out) == "a ## b"
    assert not assembler.is_stopped
    assert assembler.stop_word is None


def test_earliest_of_several_stops_wins() -> None:
    assembler = TextAssembler(("b", "ab"))
    feed_all(assembler, [b"xxab"])
    assert assembler.text == "xx"
    assert assembler.stop_word == "ab"


def test_the_stop_named_is_the_one_that_cut_the_text() -> None:
    # Both occur in the text the last token brought; the one found first in the list
    # ("b") is not the one that ended it: the earliest match is.
    assembler = TextAssembler(("b", "a"))
    feed_all(assembler, [b"x", b"yab"])
    assert (assembler.text, assembler.stop_word) == ("xy", "a")


def test_at_one_position_the_first_stop_given_is_named() -> None:
    assembler = TextAssembler(("cd", "c"))
    feed_all(assembler, [b"abcd"])
    assert (assembler.text, assembler.stop_word) == ("ab", "cd")
