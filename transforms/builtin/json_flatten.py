"""json_flatten: turn nested objects into top-level fields (`a.b`), arrays into `k.N`."""

from __future__ import annotations

from typing import Any, ClassVar

import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field

from bytefreezer.transforms.base import Transform, TransformConfig


class JsonFlattenConfig(TransformConfig):
    """Flatten nested values."""

    separator: str = Field(".", min_length=1, description="Joins the parts of a flattened name.")
    flatten_arrays: bool = Field(True, description="Turn array elements into `k.0`, `k.1`, ...")
    max_depth: int = Field(16, ge=1, description="Levels flattened; deeper values stay nested.")
    fields: list[str] = Field(
        default_factory=list, description="Only flatten these top-level fields (default all)."
    )


class JsonFlatten(Transform):
    """Flatten structs (and arrays) into top-level columns."""

    name: ClassVar[str] = "json_flatten"
    Config: ClassVar[type[TransformConfig]] = JsonFlattenConfig
    example: ClassVar[dict[str, Any]] = {"separator": "_"}

    def apply(self, table: pa.Table) -> pa.Table:
        cfg = self.config
        assert isinstance(cfg, JsonFlattenConfig)
        names: list[str] = []
        columns: list[pa.ChunkedArray] = []
        for name, column in zip(table.column_names, table.columns, strict=True):
            if cfg.fields and name not in cfg.fields:
                names.append(name)
                columns.append(column)
                continue
            for sub_name, sub in self._flatten(name, column, cfg.max_depth):
                names.append(sub_name)
                columns.append(sub)
        return pa.Table.from_arrays(columns, names=names)

    def _flatten(
        self, name: str, column: pa.ChunkedArray, depth: int
    ) -> list[tuple[str, pa.ChunkedArray]]:
        cfg = self.config
        assert isinstance(cfg, JsonFlattenConfig)
        kind = column.type
        if depth <= 0:
            return [(name, column)]
        if pa.types.is_struct(kind):
            out: list[tuple[str, pa.ChunkedArray]] = []
            for index in range(kind.num_fields):
                child = pc.struct_field(column, index)
                child_name = f"{name}{cfg.separator}{kind.field(index).name}"
                out.extend(self._flatten(child_name, child, depth - 1))
            return out
        if cfg.flatten_arrays and (pa.types.is_list(kind) or pa.types.is_large_list(kind)):
            lengths = pc.list_value_length(column)
            longest = pc.max(lengths).as_py() or 0
            out = []
            for i in range(longest):
                element = pc.list_element(
                    pc.if_else(
                        pc.greater(pc.fill_null(lengths, 0), i), column, pa.scalar(None, kind)
                    ),
                    i,
                )
                out.extend(self._flatten(f"{name}{cfg.separator}{i}", element, depth - 1))
            return out
        return [(name, column)]
