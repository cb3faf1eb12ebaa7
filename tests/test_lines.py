"""What a line is, as the receiver counts and piper reads them."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from bytefreezer.lines import BLANK_BYTES, any_line_starts_with, count_nonblank_lines

DATA = st.lists(
    st.sampled_from([b"\n", b" ", b"\t", b"\r", b"\x0b", b"\x0c", b"a", b"n", b"{"])
).map(b"".join)


@settings(max_examples=300, deadline=None)
@given(DATA, st.sampled_from([BLANK_BYTES, b"n \t\r", b"{"]))
def test_line_starts_and_counts_match_the_plain_reading(data: bytes, chars: bytes) -> None:
    firsts = [data[:1]] + [data[i + 1 : i + 2] for i in range(len(data)) if data[i] == 0x0A]
    assert any_line_starts_with(data, chars) == any(f and f in chars for f in firsts)
    expected = sum(1 for line in data.split(b"\n") if line.strip(BLANK_BYTES))
    assert count_nonblank_lines(data) == expected
