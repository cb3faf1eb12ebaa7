"""kv: parse `key=value` pairs from a text field into fields."""

from __future__ import annotations

import re
from typing import Any, ClassVar

import pyarrow as pa
from pydantic import Field

from bytefreezer.transforms.base import Transform, TransformConfig
from bytefreezer.transforms.tables import get_column, rows_to_table, set_column, string_values


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
        fs, vs = re.escape(cfg.field_split), re.escape(cfg.value_split)
        # A quoted value may hold its quote escaped with a backslash (logfmt: msg="say \"hi\"").
        pair = re.compile(
            rf"([^{fs}{vs}]+)[{vs}](\"[^\"\\]*(?:\\.[^\"\\]*)*\"|'[^'\\]*(?:\\.[^'\\]*)*'|[^{fs}]*)"
        )
        include, exclude = set(cfg.include_keys), set(cfg.exclude_keys)
        cache: dict[str, dict[str, str]] = {}
        rows = []
        for text in string_values(column).to_pylist():
            if text is None:
                rows.append(dict(cfg.defaults))
                continue
            parsed = cache.get(text)
            if parsed is None:
                parsed = {}
                for key, value in pair.findall(text):
                    key = key.strip(cfg.trim_key) if cfg.trim_key else key.strip()
                    if (include and key not in include) or key in exclude or not key:
                        continue
                    parsed[cfg.prefix + key] = (
                        _value(value, cfg.trim_value)
                        if value[:1] in _QUOTES
                        else value.strip(cfg.trim_value)
                    )
                cache[text] = parsed
            rows.append({**cfg.defaults, **parsed})
        if cfg.target_field:
            values = pa.array([r or None for r in rows])
            return set_column(table, cfg.target_field, values)
        extracted = rows_to_table(rows)
        for name in extracted.column_names:
            table = set_column(table, name, extracted.column(name))
        return table


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
