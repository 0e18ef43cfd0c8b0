"""Where a JSON value ends in a reply's text, before the text is whole: a bare tool call
is held until its object closes.

Only brackets and strings are followed (a brace inside a string counts for nothing), not
whether the JSON is valid: the call's decoder judges that once the value is whole.
"""

from __future__ import annotations


def object_end(text: str) -> int | None:
    """Where the JSON object ``text`` starts with ends (after its ``}``); None: not yet."""
    depth, in_string, escaped = 0, False, False
    for i, char in enumerate(text):
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "{[":
            depth += 1
        elif char in "}]":
            depth -= 1
            if depth == 0:
                return i + 1
    return None
