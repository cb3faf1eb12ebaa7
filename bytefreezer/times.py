"""Times as text: one formatter for the many rows that carry a nanosecond time."""

from __future__ import annotations

import functools
from datetime import UTC, datetime


@functools.lru_cache(maxsize=1024)
def _day(days: int) -> str:
    return datetime.fromtimestamp(days * 86400, UTC).strftime("%Y-%m-%d")


def rfc3339_nanos(seconds: int, nanoseconds: int) -> str:
    """RFC 3339 in UTC to the nanosecond; the date formatted once a day (strftime for each
    forward-protocol entry was a fifth of its decoding)."""
    days, second = divmod(seconds, 86400)
    hours, second = divmod(second, 3600)
    minutes, second = divmod(second, 60)
    return f"{_day(days)}T{hours:02d}:{minutes:02d}:{second:02d}.{nanoseconds:09d}Z"
