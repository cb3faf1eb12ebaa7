"""Times as text: the nanosecond formatter against the standard library's reading of the same
instant."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from bytefreezer.times import rfc3339_nanos

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@settings(max_examples=500, deadline=None)
@given(
    st.integers(min_value=-62_135_596_800, max_value=253_402_300_799),  # years 1 to 9999
    st.integers(min_value=0, max_value=10**9 - 1),
)
def test_rfc3339_nanos_is_the_instant(seconds: int, nanoseconds: int) -> None:
    moment = EPOCH + timedelta(seconds=seconds)
    expected = moment.strftime("%Y-%m-%dT%H:%M:%S") + f".{nanoseconds:09d}Z"
    assert rfc3339_nanos(seconds, nanoseconds) == expected


def test_the_edges_of_a_day() -> None:
    assert rfc3339_nanos(0, 0) == "1970-01-01T00:00:00.000000000Z"
    assert rfc3339_nanos(86_399, 999_999_999) == "1970-01-01T23:59:59.999999999Z"
    assert rfc3339_nanos(-1, 5) == "1969-12-31T23:59:59.000000005Z"
    assert rfc3339_nanos(1_764_250_000, 0) == "2025-11-27T13:26:40.000000000Z"
