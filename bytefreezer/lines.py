"""Lines as every stage reads them: split at newlines, blank when they hold only ASCII whitespace
(what ``bytes.strip()`` removes) — the proxy, the receiver's counts and piper's decoders agree."""

from __future__ import annotations

import functools

import numpy as np

BLANK = " \t\r\n\x0b\x0c"
BLANK_BYTES = BLANK.encode()


def is_blank(line: str) -> bool:
    """Whether ``line`` holds only ASCII whitespace (``str.strip()`` would also take, say, a
    line of no-break spaces)."""
    return not line.strip(BLANK)


def any_line_starts_with(data: bytes, chars: bytes) -> bool:
    """Whether a line of ``data`` starts with one of ``chars``: numpy over the first byte of
    each line, ~0.05 ms per 400 KB."""
    view = np.frombuffer(data, np.uint8)
    return _starts_with(view, newline_positions(view), chars)


def count_nonblank_lines(data: bytes) -> int:
    """Lines of ``data`` holding more than ASCII whitespace (a last line without a newline
    counts); split in Python only when a line may be blank (starts with whitespace)."""
    view = np.frombuffer(data, np.uint8)
    newlines = newline_positions(view)
    if _starts_with(view, newlines, BLANK_BYTES):
        return sum(1 for line in data.split(b"\n") if line.strip(BLANK_BYTES))
    return len(newlines) + (0 if data.endswith(b"\n") or not data else 1)


def valid_utf8(data: bytes) -> bool:
    """Whether ``data`` is UTF-8 (ASCII answered without decoding)."""
    if data.isascii():
        return True
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def newline_positions(view: np.ndarray) -> np.ndarray:
    """Where the newlines of ``view`` (bytes as ``np.uint8``) are: one pass over them."""
    return np.flatnonzero(view == _NEWLINE)


def longest_line(data: bytes) -> int:
    """The length in bytes of the longest line of ``data`` (whole lines, each ending in a
    newline), its newline not counted: one numpy pass over the bytes."""
    newlines = newline_positions(np.frombuffer(data, np.uint8))
    if not len(newlines):
        return len(data)
    return int(np.diff(newlines, prepend=-1).max()) - 1


_NEWLINE = 0x0A


@functools.cache
def _byte_table(chars: bytes) -> np.ndarray:
    table = np.zeros(256, bool)
    table[list(chars)] = True
    return table


def _starts_with(view: np.ndarray, newlines: np.ndarray, chars: bytes) -> bool:
    """Whether the first byte of ``view`` or one after a newline is one of ``chars`` (one
    comparison over the bytes and a table lookup: np.isin sorted, and 32 threads of the
    receiver spent as long in it as in inflating the body)."""
    if not len(view):
        return False
    after = newlines + 1
    if len(after) and after[-1] == len(view):
        after = after[:-1]
    table = _byte_table(chars)
    return bool(table[view[0]]) or bool(table[view[after]].any())
