"""kv: parse `key=value` pairs from a text field into fields."""

from __future__ import annotations

import re
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field

from bytefreezer.transforms.base import Transform, TransformConfig
from bytefreezer.transforms.tables import get_column, set_column, string_values


class KvConfig(TransformConfig):
    """Split ``field`` into pairs and pairs into keys and values."""

    field: str = Field("message", description="Text field holding the pairs.")
    field_split: str = Field(" ", min_length=1, description="Characters that separate pairs.")
    value_split: str = Field("=", min_length=1, description="Characters between key and value.")
    prefix: str = Field("", description="Prepended to every key.")
    include_keys: list[str] = Field(
        default_factory=list, description="Only these keys (default all)."
    )
    exclude_keys: list[str] = Field(default_factory=list, description="Never these keys.")
    trim_key: str = Field("", description="Characters stripped from both ends of keys.")
    trim_value: str = Field("\"'", description="Characters stripped from both ends of values.")
    defaults: dict[str, str] = Field(
        default_factory=dict, description="Values for keys a record does not have."
    )
    target_field: str | None = Field(None, description="Put the pairs under this object field.")


class Kv(Transform):
    """Key-value parsing, with quoted values kept whole."""

    name: ClassVar[str] = "kv"
    Config: ClassVar[type[TransformConfig]] = KvConfig
    example: ClassVar[dict[str, Any]] = {"field": "message", "field_split": " ", "value_split": "="}

    def apply(self, table: pa.Table) -> pa.Table:
        cfg = self.config
        assert isinstance(cfg, KvConfig)
        column = get_column(table, cfg.field)
        if column is None:
            return table
        pairs = pair_pattern(cfg.field_split, cfg.value_split).findall
        include, exclude = set(cfg.include_keys), set(cfg.exclude_keys)
        strip_key = cfg.trim_key or None  # None: whitespace
        trim = cfg.trim_value
        # Straight into columns: per key, the rows that have it and their values (a row's last
        # value of a key wins, as in a dict).
        found: dict[str, tuple[list[int], list[str]]] = {}
        for row, text in enumerate(string_values(column).to_pylist()):
            if text is None:
                continue
            for key, value in pairs(text):
                key = key.strip(strip_key)
                if not key or (include and key not in include) or key in exclude:
                    continue
                entry = found.get(key)
                if entry is None:
                    entry = found[key] = ([], [])
                entry[0].append(row)
                entry[1].append(_value(value, trim) if value[:1] in _QUOTES else value.strip(trim))
        n = table.num_rows
        if n == 0:
            return set_column(table, cfg.target_field, pa.nulls(0)) if cfg.target_field else table
        columns = {name: pa.repeat(value, n) for name, value in cfg.defaults.items()}
        for key, (rows, values) in found.items():
            name = cfg.prefix + key
            spread = _spread(rows, values, n)
            columns[name] = pc.coalesce(spread, columns[name]) if name in columns else spread
        if cfg.target_field:
            return set_column(table, cfg.target_field, _as_objects(columns, n))
        for name, values in columns.items():
            table = set_column(table, name, values)
        return table


def pair_pattern(field_split: str, value_split: str) -> re.Pattern[str]:
    """A key and its value; a quoted value may hold its quote escaped with a backslash
    (logfmt: ``msg="say \\"hi\\""``)."""
    fs, vs = re.escape(field_split), re.escape(value_split)
    return re.compile(
        rf"([^{fs}{vs}]+)[{vs}](\"[^\"\\]*(?:\\.[^\"\\]*)*\"|'[^'\\]*(?:\\.[^'\\]*)*'|[^{fs}]*)"
    )


def _spread(rows: list[int], values: list[str], n: int) -> pa.Array:
    """``values`` at ``rows`` (ascending; of a row given twice, the last) of ``n``, null
    elsewhere."""
    at = np.asarray(rows, dtype=np.int64)
    last = np.ones(len(at), dtype=bool)
    last[:-1] = at[1:] != at[:-1]
    index = np.full(n, -1, dtype=np.int64)
    index[at[last]] = np.flatnonzero(last)
    return pa.array(values, pa.string()).take(pa.array(index, mask=index < 0))


def _as_objects(columns: dict[str, pa.Array], n: int) -> pa.Array:
    """The pairs of each record as an object (null for a record without any)."""
    if not columns:
        return pa.nulls(n)
    present = np.zeros(n, dtype=bool)
    for values in columns.values():
        present |= pc.is_valid(values).to_numpy(zero_copy_only=False)
    return pa.StructArray.from_arrays(
        list(columns.values()), list(columns), mask=pa.array(~present)
    )


_QUOTES = ('"', "'")
_ESCAPED = re.compile(r"\\([\\\"'])")


def _value(value: str, trim: str) -> str:
    """A value with ``trim`` stripped from its ends; a quoted one (when its quote is in
    ``trim``) loses exactly its quotes and has its escaped quotes and backslashes unescaped,
    other backslashes kept (``C:\\temp`` as written)."""
    quote = value[:1]
    if quote in _QUOTES and len(value) >= 2 and value[-1] == quote and quote in trim:
        inner = value[1:-1]
        return _ESCAPED.sub(r"\1", inner) if "\\" in inner else inner
    return value.strip(trim)
