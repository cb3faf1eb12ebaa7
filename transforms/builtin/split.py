"""split: fan one record out into one record per element of a field."""

from __future__ import annotations

from typing import Any, ClassVar

import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field

from bytefreezer.transforms.base import Transform, TransformConfig
from bytefreezer.transforms.tables import set_column, string_values


class SplitConfig(TransformConfig):
    """Fan out by ``field``."""

    field: str = Field(description="An array field, or a text field split by `separator`.")
    separator: str | None = Field(
        None, description="Split text on this; default: a text field holds one line per record."
    )
    target_field: str | None = Field(None, description="Where each element goes; default `field`.")
    keep_empty: bool = Field(False, description="Keep records whose field is empty or absent.")


class Split(Transform):
    """One record per element: the original's split, which did not fan out, fixed."""

    name: ClassVar[str] = "split"
    Config: ClassVar[type[TransformConfig]] = SplitConfig
    example: ClassVar[dict[str, Any]] = {"field": "tags", "separator": ","}

    def apply(self, table: pa.Table) -> pa.Table:
        cfg = self.config
        assert isinstance(cfg, SplitConfig)
        if cfg.field not in table.column_names:
            return table
        column = table.column(cfg.field)
        if not (pa.types.is_list(column.type) or pa.types.is_large_list(column.type)):
            text = string_values(column)
            column = pc.split_pattern(text, pattern=cfg.separator or "\n")
        lists = column.combine_chunks()
        if cfg.keep_empty:
            empty = pc.fill_null(pc.equal(pc.list_value_length(lists), 0), True)
            lists = pc.if_else(empty, pa.scalar([None], lists.type), lists)
        parents = pc.list_parent_indices(lists)
        values = pc.list_flatten(lists)
        out = table.take(parents)
        target = cfg.target_field or cfg.field
        if target != cfg.field:
            return set_column(out, target, values)
        return set_column(out, cfg.field, values)
