"""Property-based fuzzing of every decoder and of the receiver's body handling."""

from __future__ import annotations

import gzip
import zlib

import zstandard
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bytefreezer.ingress.bodies import BodyError, count_lines, prepare
from bytefreezer.ingress.headers import proxy_metadata
from bytefreezer.pipelines.decode import FORMATS, decode_object
from bytefreezer.pipelines.parquet import parquet_bytes

LINE = st.one_of(
    st.binary(max_size=200),
    st.text(max_size=200).map(str.encode),
    st.dictionaries(
        st.text(max_size=8),
        st.one_of(st.integers(), st.text(max_size=20), st.none(), st.floats(allow_nan=False)),
        max_size=5,
    ).map(lambda d: __import__("json").dumps(d).encode()),
)
BODY = st.lists(LINE, max_size=30).map(lambda lines: b"\n".join(lines))
FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(body=BODY, fmt=st.sampled_from(FORMATS))
def test_decoders_never_crash_and_account_for_lines(body: bytes, fmt: str) -> None:
    decoded = decode_object(gzip.compress(body), fmt)
    for line, reason in decoded.rejected:
        assert isinstance(line, str) and reason
    parquet_bytes(decoded.table, "zstd")  # whatever a decoder returns can be staged
    lines = [line for line in body.split(b"\n") if line.strip()]
    if fmt in ("ndjson", "raw", "gelf", "syslog", "logfmt", "kv", "cef", "apache", "nginx"):
        # one record or one dead letter per line: nothing is dropped silently
        assert decoded.table.num_rows + len(decoded.rejected) == len(lines)
        assert count_lines(body) == len(lines)  # what ingest counts, piper reads


@FUZZ
@given(
    raw=st.binary(max_size=2000),
    encoding=st.sampled_from(["", "identity", "gzip", "deflate", "zstd", "br", "GZIP"]),
    fmt=st.sampled_from(FORMATS),
)
def test_receiver_bodies_either_pass_or_get_a_client_error(
    raw: bytes, encoding: str, fmt: str
) -> None:
    try:
        body = prepare(raw, encoding, fmt, 1_000_000)
    except BodyError as exc:
        assert 400 <= exc.status < 500 and exc.message
    else:
        assert gzip.decompress(body.member).strip()


@FUZZ
@given(
    payload=BODY,
    encoding=st.sampled_from(["gzip", "deflate", "zstd"]),
    cut=st.integers(min_value=1, max_value=40),
)
def test_truncated_compressed_bodies_are_refused(payload: bytes, encoding: str, cut: int) -> None:
    payload = payload.strip() + b"\n{}"
    packed = {
        "gzip": gzip.compress,
        "deflate": zlib.compress,
        "zstd": zstandard.ZstdCompressor().compress,
    }[encoding](payload)
    try:
        prepare(packed[: max(1, len(packed) - cut)], encoding, "raw", 1_000_000)
    except BodyError as exc:
        assert exc.status == 400
    else:  # a cut inside the trailer can still leave a complete stream for some codecs
        assert encoding != "gzip"


@FUZZ
@given(
    headers=st.dictionaries(
        st.sampled_from(
            ["x-proxy-filename", "x-proxy-line-count", "x-proxy-batch-id", "x-proxy-data-hint"]
        ),
        st.text(max_size=80),
        max_size=4,
    )
)
def test_proxy_headers_are_kept_or_refused_never_crash(headers: dict[str, str]) -> None:
    try:
        metadata = proxy_metadata(headers, "acme", "web")
    except BodyError as exc:
        assert exc.status == 400
    else:
        assert all(
            ".." not in v and "/" not in v for k, v in metadata.items() if k == "proxy-filename"
        )
