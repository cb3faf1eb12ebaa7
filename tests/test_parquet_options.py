"""How bytefreezer writes Parquet: dictionaries for text columns whose values repeat, numbers
and one-off text plain."""

from __future__ import annotations

import io

import pyarrow as pa
import pyarrow.parquet as pq

from bytefreezer.pipelines.parquet import DICTIONARY_MIN_ROWS, dictionary_columns, parquet_bytes


def _encodings(data: bytes) -> dict[str, list[str]]:
    meta = pq.ParquetFile(io.BytesIO(data)).metadata.row_group(0)
    return {
        meta.column(i).path_in_schema: list(meta.column(i).encodings)
        for i in range(meta.num_columns)
    }


def _events(rows: int) -> pa.Table:
    return pa.table(
        {
            "action": ["login", "logout"] * (rows // 2),
            "session": [f"{i:016x}" for i in range(rows)],  # never repeats
            "bytes": list(range(rows)),
            "geo": [
                {"country": "NL", "lat": 52.1, "ip": f"10.0.{i // 256}.{i % 256}"}
                for i in range(rows)
            ],
            "tags": [["a"]] * rows,
        }
    )


def test_repeating_text_gets_dictionaries_and_numbers_and_one_off_text_are_plain() -> None:
    table = _events(1200)
    assert dictionary_columns(table.schema) == ["action", "session", "geo.country", "geo.ip"]
    assert dictionary_columns(table.schema, table) == ["action", "geo.country"]
    encodings = _encodings(parquet_bytes(table, "zstd"))
    assert "RLE_DICTIONARY" in encodings["action"]
    assert "RLE_DICTIONARY" in encodings["geo.country"]
    for plain in ("session", "bytes", "geo.lat", "geo.ip"):
        assert "RLE_DICTIONARY" not in encodings[plain], plain
    assert pq.read_table(io.BytesIO(parquet_bytes(table, "none"))).equals(table)


def test_the_choice_is_made_on_a_sample_of_the_first_rows() -> None:
    repeating_first = pa.concat_tables(
        [_events(4096).select(["action"]), pa.table({"action": [f"u{i}" for i in range(4096)]})]
    )
    assert dictionary_columns(repeating_first.schema, repeating_first) == ["action"]
    assert dictionary_columns(repeating_first.schema, repeating_first.slice(4096)) == []
    small = _events(DICTIONARY_MIN_ROWS - 2)  # a small file: no dictionary pays
    assert dictionary_columns(small.schema, small) == []
    assert "RLE_DICTIONARY" not in _encodings(parquet_bytes(small, "zstd"))["action"]
