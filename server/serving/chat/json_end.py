"""Where a JSON value ends in a reply's text, before the text is whole: a tool call's
arguments stream out up to their value's end, and a bare tool call is held until its
object closes.

Only brackets and strings are followed (a brace inside a string counts for nothing), not
whether the JSON is valid: the call's decoder judges that once the value is whole.
"""

from __future__ import annotations


class JsonEnd:
    """Follows one JSON object or array (its text starts with ``{`` or ``[``), piece by
    piece: what was read of it before counts for the next piece."""

    def __init__(self) -> None:
        self.depth = 0
        self.in_string = False
        self.escaped = False

    def find(self, text: str) -> int | None:
        """Where in ``text``, the value's next piece, it ends (after its closing bracket);
        None: not in this piece."""
        for i, char in enumerate(text):
            if self.in_string:
                if self.escaped:
                    self.escaped = False
                elif char == "\\":
                    self.escaped = True
                elif char == '"':
                    self.in_string = False
            elif char == '"':
                self.in_string = True
            elif char in "{[":
                self.depth += 1
            elif char in "}]":
                self.depth -= 1
                if self.depth == 0:
                    return i + 1
        return None


def object_end(text: str) -> int | None:
    """Where the JSON object ``text`` starts with ends (after its ``}``); None: not yet."""
    return JsonEnd().find(text)
