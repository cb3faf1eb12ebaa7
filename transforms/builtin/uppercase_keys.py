"""uppercase_keys: upper-case every field name, nested ones too."""

from __future__ import annotations

from typing import Any, ClassVar

import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field

from bytefreezer.transforms.base import Transform, TransformConfig


class UppercaseKeysConfig(TransformConfig):
    """Upper-case field names."""

    recursive: bool = Field(True, description="Also rename fields inside nested objects.")


def _upper(array: pa.Array) -> pa.Array:
    """``array`` with every nested field name upper-cased."""
    kind = array.type
    if pa.types.is_struct(kind):
        children = [_upper(array.field(i)) for i in range(kind.num_fields)]
        names = [kind.field(i).name.upper() for i in range(kind.num_fields)]
        mask = array.is_null() if array.null_count else None
        return pa.StructArray.from_arrays(children, names=names, mask=mask)
    if pa.types.is_list(kind):
        offsets = array.offsets
        if array.null_count:
            nulls = pa.concat_arrays([array.is_null(), pa.array([False])])
            offsets = pc.if_else(nulls, pa.scalar(None, offsets.type), offsets)
        return pa.ListArray.from_arrays(offsets, _upper(array.values))
    return array


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
                column = pa.chunked_array([_upper(column.combine_chunks())])
            columns[name.upper()] = column
        return pa.table(columns)
