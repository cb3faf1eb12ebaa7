"""How bytefreezer writes Parquet: dictionaries for text columns only."""

from __future__ import annotations

import io

import pyarrow as pa
import pyarrow.parquet as pq

from bytefreezer.pipelines.parquet import dictionary_columns, parquet_bytes


def test_text_columns_get_dictionaries_and_numbers_are_plain() -> None:
    table = pa.table(
        {
            "action": ["login", "logout"] * 50,
            "bytes": list(range(100)),
            "geo": [{"country": "NL", "lat": 52.1}] * 100,
            "tags": [["a"]] * 100,
        }
    )
    assert dictionary_columns(table.schema) == ["action", "geo.country"]
    meta = pq.ParquetFile(io.BytesIO(parquet_bytes(table, "zstd"))).metadata.row_group(0)
    encodings = {meta.column(i).path_in_schema: meta.column(i).encodings for i in range(4)}
    assert "RLE_DICTIONARY" in encodings["action"]
    assert "RLE_DICTIONARY" in encodings["geo.country"]
    assert "RLE_DICTIONARY" not in encodings["bytes"]
    assert "RLE_DICTIONARY" not in encodings["geo.lat"]
    assert pq.read_table(io.BytesIO(parquet_bytes(table, "none"))).equals(table)
