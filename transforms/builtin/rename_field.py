"""rename_field: give a field a new name."""

from __future__ import annotations

from typing import Any, ClassVar

import pyarrow as pa
from pydantic import Field

from bytefreezer.transforms.base import Transform, TransformConfig, drop_column


class RenameFieldConfig(TransformConfig):
    """Rename ``from`` to ``to``."""

    source: str = Field(alias="from", min_length=1, description="The field's current name.")
    target: str = Field(alias="to", min_length=1, description="Its new name.")
    overwrite: bool = Field(True, description="Replace an existing field called `to`.")


class RenameField(Transform):
    """Rename a field (records without it are unchanged)."""

    name: ClassVar[str] = "rename_field"
    Config: ClassVar[type[TransformConfig]] = RenameFieldConfig
    example: ClassVar[dict[str, Any]] = {"from": "src", "to": "source_ip"}

    def apply(self, table: pa.Table) -> pa.Table:
        cfg = self.config
        assert isinstance(cfg, RenameFieldConfig)
        index = table.schema.get_field_index(cfg.source)
        if index < 0 or cfg.source == cfg.target:
            return table
        if cfg.target in table.column_names:
            if not cfg.overwrite:
                return table
            table = drop_column(table, cfg.target)
            index = table.schema.get_field_index(cfg.source)
        names = list(table.column_names)
        names[index] = cfg.target
        return table.rename_columns(names)
