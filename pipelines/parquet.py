"""Parquet objects in memory: one place for how bytefreezer writes and reads them."""

from __future__ import annotations

import io

import pyarrow as pa
import pyarrow.parquet as pq


def parquet_bytes(table: pa.Table, compression: str, *, level: int | None = None) -> bytes:
    """``table`` as a Parquet file (``compression`` "none" writes it uncompressed)."""
    sink = io.BytesIO()
    codec = None if compression == "none" else compression
    pq.write_table(table, sink, compression=codec, compression_level=level)
    return sink.getvalue()


def read_parquet(data: bytes) -> pa.Table:
    """A whole Parquet file from its bytes."""
    return pq.read_table(io.BytesIO(data))
