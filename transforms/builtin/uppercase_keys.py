"""uppercase_keys: upper-case every field name, nested ones too."""

from __future__ import annotations

from typing import Any, ClassVar

import pyarrow as pa
from pydantic import Field

from bytefreezer.transforms.base import Transform, TransformConfig


class UppercaseKeysConfig(TransformConfig):
    """Upper-case field names."""

    recursive: bool = Field(True, description="Also rename fields inside nested objects.")


def _upper_type(kind: pa.DataType) -> pa.DataType:
    if pa.types.is_struct(kind):
        return pa.struct([pa.field(f.name.upper(), _upper_type(f.type)) for f in kind])
    if pa.types.is_list(kind):
        return pa.list_(_upper_type(kind.value_type))
    return kind


class UppercaseKeys(Transform):
    """Rename fields to upper case (later duplicates win)."""

    name: ClassVar[str] = "uppercase_keys"
    Config: ClassVar[type[TransformConfig]] = UppercaseKeysConfig
    example: ClassVar[dict[str, Any]] = {}

    def apply(self, table: pa.Table) -> pa.Table:
        cfg = self.config
        assert isinstance(cfg, UppercaseKeysConfig)
        columns: dict[str, pa.ChunkedArray] = {}
        for name, column in zip(table.column_names, table.columns, strict=True):
            if cfg.recursive and (pa.types.is_struct(column.type) or pa.types.is_list(column.type)):
                column = column.cast(_upper_type(column.type))
            columns[name.upper()] = column
        return pa.table(columns)
