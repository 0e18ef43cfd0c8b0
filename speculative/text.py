"""Turning token pieces into text that is safe to stream.

Two things make this more than ``b"".join(pieces).decode()``: a multi-byte
UTF-8 character can be split across tokens, and a stop string can be split
across tokens too. Text that might be the start of a stop string is held
back until it is known not to be one, so a stream never shows a stop string
that the final reply would not contain.
"""

from __future__ import annotations

import codecs


class TextAssembler:
    def __init__(self, stop: tuple[str, ...]) -> None:
        self._stop = tuple(s for s in stop if s)
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._text = ""  # everything decoded so far, stop string cut off
        self._num_emitted = 0  # chars of _text already handed out
        self.is_stopped = False
        # The stop string that ended the text (None until one does): the text is cut
        # before it, so only here is it still known which one matched.
        self.stop_word: str | None = None

    @property
    def text(self) -> str:
        return self._text

    def feed(self, piece: bytes) -> str:
        """Add one token's bytes; return the text that is now safe to emit."""
        assert not self.is_stopped
        self._text += self._decoder.decode(piece)
        if self._stop:
            self._cut_at_stop()
        safe_end = len(self._text) if self.is_stopped else len(self._text) - self._held_back()
        return self._emit(max(safe_end, self._num_emitted))

    def finish(self) -> str:
        """End of generation: flush held-back text and any partial character."""
        if not self.is_stopped:
            self._text += self._decoder.decode(b"", final=True)
        return self._emit(len(self._text))

    def _emit(self, end: int) -> str:
        out = self._text[self._num_emitted : end]
        self._num_emitted = end
        return out

    def _cut_at_stop(self) -> None:
        # A new match can only start within the last (longest stop - 1) chars
        # before the unsearched tail, so the scan stays short for long outputs.
        start = max(0, self._num_emitted - max(map(len, self._stop)))
        hits = [(i, s) for s in self._stop if (i := self._text.find(s, start)) >= 0]
        if hits:
            # the earliest match wins; at one position, the first stop given
            at, self.stop_word = min(hits, key=lambda hit: hit[0])
            self._text = self._text[:at]
            self.is_stopped = True

    def _held_back(self) -> int:
        """Length of the longest text suffix that is a proper prefix of a stop string.

        Only suffixes starting where a stop string's first character stands can be
        one: each stop is checked at those places only, longest first (linear in the
        stop's length, where trying every length was quadratic).
        """
        longest = 0
        text = self._text
        for stop in self._stop:
            # proper prefixes only, and only ones longer than the longest found so far
            end = len(text) - longest
            at = text.find(stop[0], max(len(text) - len(stop) + 1, 0), end)
            while at >= 0:
                if stop.startswith(text[at:]):
                    longest = len(text) - at
                    break
                at = text.find(stop[0], at + 1, end)
        return longest
