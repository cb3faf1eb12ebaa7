"""Inflating gzip and deflate streams: ISA-L (``isal``) does it about three times faster than
zlib, on the same streams and with the same API. The receiver and piper both inflate here."""

from __future__ import annotations

from typing import Any, cast

from isal import isal_zlib

InflateError = cast(type[Exception], isal_zlib.error)  # its stub calls the class an instance


def decompressobj(wbits: int) -> Any:
    """A streaming decompressor like ``zlib.decompressobj(wbits=...)``."""
    return isal_zlib.decompressobj(wbits=wbits)
