"""Decoders: raw intake bytes to an Arrow table plus the lines that could not be read."""

from __future__ import annotations

import gzip
import io
import zlib
from dataclasses import dataclass, field

import orjson
import pyarrow as pa
import pyarrow.json as pajson

from bytefreezer.transforms.tables import rows_to_table

_MAX_BLOCK = 1 << 30


@dataclass
class Decoded:
    """Rows read from one object, and the lines rejected with their reasons."""

    table: pa.Table
    rejected: list[tuple[str, str]] = field(default_factory=list)  # (line, reason)
    lines: int = 0


def gunzip(data: bytes) -> bytes:
    """Decompress a gzip object (several members allowed); plain bytes pass through."""
    if data[:2] != b"\x1f\x8b":
        return data
    try:
        return gzip.decompress(data)
    except (OSError, EOFError, zlib.error) as exc:
        raise ValueError(f"corrupt gzip object: {exc}") from None


def decode_ndjson(data: bytes) -> Decoded:
    """Decode newline-delimited JSON objects; malformed lines are rejected, not fatal."""
    if not data.strip():
        return Decoded(pa.table({}), [], 0)
    try:
        options = pajson.ReadOptions(block_size=min(max(len(data) + 1, 1 << 20), _MAX_BLOCK))
        table = pajson.read_json(io.BytesIO(data), read_options=options)
        return Decoded(table, [], table.num_rows)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return _decode_lines(data)


def _decode_lines(data: bytes) -> Decoded:
    rows: list[dict[str, object]] = []
    rejected: list[tuple[str, str]] = []
    lines = 0
    for raw in data.split(b"\n"):
        if not raw.strip():
            continue
        lines += 1
        try:
            value = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            rejected.append((raw.decode("utf-8", "replace"), f"invalid JSON: {exc}"))
            continue
        if not isinstance(value, dict):
            kind = type(value).__name__
            rejected.append((raw.decode("utf-8", "replace"), f"not a JSON object ({kind})"))
            continue
        rows.append(value)
    return Decoded(rows_to_table(rows), rejected, lines)
