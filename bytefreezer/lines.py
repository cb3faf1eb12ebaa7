"""Lines as every stage reads them: split at newlines, blank when they hold only ASCII whitespace
(what ``bytes.strip()`` removes) — the proxy, the receiver's counts and piper's decoders agree."""

from __future__ import annotations

import numpy as np

BLANK = " \t\r\n\x0b\x0c"
BLANK_BYTES = BLANK.encode()


def is_blank(line: str) -> bool:
    """Whether ``line`` holds only ASCII whitespace (``str.strip()`` would also take, say, a
    line of no-break spaces)."""
    return not line.strip(BLANK)


def any_line_starts_with(data: bytes, chars: bytes) -> bool:
    """Whether a line of ``data`` starts with one of ``chars``: numpy over the first byte of
    each line, ~0.15 ms per MB."""
    view = np.frombuffer(data, np.uint8)
    firsts = np.concatenate((view[:1], view[np.flatnonzero(view[:-1] == 0x0A) + 1]))
    return bool(np.isin(firsts, np.frombuffer(chars, np.uint8)).any())
