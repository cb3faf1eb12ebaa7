"""JSON bodies (an array, an object, or several values one after another) as every stage frames
them into records: the receiver's count and piper's decoder agree."""

from __future__ import annotations

import json
from collections.abc import Iterator

_WHITESPACE = " \t\r\n"  # JSON's own


class UnframedJson(ValueError):
    """The value starting at ``start`` does not parse: nothing from there on can be framed."""

    def __init__(self, text: str, start: int, error: json.JSONDecodeError) -> None:
        super().__init__(f"{error.msg} at {error.pos}")
        self.rest = text[start : start + 1000]
        self.error = error


def json_records(text: str) -> Iterator[object]:
    """The records of a JSON body: the elements of an array, any other value as one, for each
    value of the text (a byte-order mark before the first is skipped). Raises ``UnframedJson``
    at the first value that does not parse, after the records before it."""
    if text.startswith("\ufeff"):
        text = text[1:]
    decoder = json.JSONDecoder()
    position, size = 0, len(text)
    while True:
        while position < size and text[position] in _WHITESPACE:
            position += 1
        if position >= size:
            return
        try:
            value, end = decoder.raw_decode(text, position)
        except json.JSONDecodeError as exc:
            raise UnframedJson(text, position, exc) from None
        if isinstance(value, list):
            yield from value
        else:
            yield value
        position = end
