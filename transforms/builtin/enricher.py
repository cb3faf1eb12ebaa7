"""enricher: join a lookup table (CSV, JSON or Parquet object in a bucket) on a key field."""

from __future__ import annotations

import io
from typing import Any, ClassVar, Literal

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
from pydantic import Field

from bytefreezer.errors import ConfigError
from bytefreezer.transforms.base import Context, Transform, TransformConfig
from bytefreezer.transforms.resources import RefreshingObject
from bytefreezer.transforms.tables import get_column, read_ndjson, set_column, string_values


class EnricherConfig(TransformConfig):
    """Add the columns of the lookup row whose ``lookup_key`` equals ``source_field``."""

    source_field: str = Field(description="Record field holding the key (dotted paths allowed).")
    object: str = Field(description="Key of the lookup table in the bucket, e.g. `users.csv`.")
    bucket: str = Field("geoip", description="Bucket holding the table.")
    format: Literal["auto", "csv", "json", "parquet"] = Field(
        "auto", description="Table format; `auto` goes by the file extension."
    )
    lookup_key: str = Field(description="Column of the table matched against the record's key.")
    fields: list[str] = Field(
        default_factory=list, description="Columns added (default all but the key)."
    )
    prefix: str = Field("", description="Prepended to the added columns' names.")
    overwrite: bool = Field(True, description="Replace existing fields of the same name.")
    refresh_seconds: float = Field(60.0, ge=0, description="How often to look for a new table.")


def _load(data: bytes, fmt: str, key: str, lookup_key: str) -> pa.Table:
    if fmt == "auto":
        lowered = key.lower()
        fmt = (
            "parquet"
            if lowered.endswith(".parquet")
            else "csv"
            if lowered.endswith((".csv", ".tsv"))
            else "json"
        )
    if fmt == "parquet":
        table = pq.read_table(io.BytesIO(data))
    elif fmt == "csv":
        table = pacsv.read_csv(io.BytesIO(data))
    else:
        stripped = data.lstrip()
        if stripped.startswith(b"["):
            import orjson

            table = pa.Table.from_pylist(orjson.loads(stripped))
        else:  # NDJSON; pyarrow's reader crashes on some lines that are not objects
            table = read_ndjson(data, block_size=max(len(data) + 1, 1 << 20))
    if lookup_key not in table.column_names:
        raise ConfigError(f"lookup table {key} has no column {lookup_key!r} ({table.column_names})")
    keys = string_values(table.column(lookup_key))
    # Last row wins for a repeated key, like a dict.
    table = set_column(table, lookup_key, keys)
    return table


class Enricher(Transform):
    """Lookup-table join; the table is re-read when its object changes."""

    name: ClassVar[str] = "enricher"
    Config: ClassVar[type[TransformConfig]] = EnricherConfig
    example: ClassVar[dict[str, Any]] = {
        "source_field": "user_id",
        "object": "users.csv",
        "lookup_key": "id",
        "fields": ["department"],
    }

    def __init__(self, config: TransformConfig, context: Context | None = None) -> None:
        super().__init__(config, context)
        assert isinstance(config, EnricherConfig)
        self._table = RefreshingObject(
            self.context.resources,
            config.bucket,
            config.object,
            lambda data: _load(data, config.format, config.object, config.lookup_key),
            config.refresh_seconds,
        )

    def apply(self, table: pa.Table) -> pa.Table:
        cfg = self.config
        assert isinstance(cfg, EnricherConfig)
        if table.num_rows == 0:
            return table
        lookup = self._table.get()
        column = get_column(table, cfg.source_field)
        keys = lookup.column(cfg.lookup_key)
        if column is None:
            positions = pa.nulls(table.num_rows, pa.int32())
        else:
            reversed_keys = keys.take(pa.array(range(len(keys) - 1, -1, -1)))
            found = pc.index_in(string_values(column), value_set=reversed_keys.combine_chunks())
            positions = pc.subtract(len(keys) - 1, found)
        names = cfg.fields or [n for n in lookup.column_names if n != cfg.lookup_key]
        for name in names:
            if name not in lookup.column_names:
                raise ConfigError(f"lookup table {cfg.object} has no column {name!r}")
            target = cfg.prefix + name
            if not cfg.overwrite and target in table.column_names:
                continue
            table = set_column(table, target, lookup.column(name).take(positions))
        return table
