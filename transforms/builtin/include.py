"""include: keep only the listed fields."""

from __future__ import annotations

from typing import Any, ClassVar

import pyarrow as pa
from pydantic import Field

from bytefreezer.transforms.base import Transform, TransformConfig


class IncludeConfig(TransformConfig):
    """The fields to keep."""

    fields: list[str] = Field(min_length=1, description="Fields kept; every other is removed.")


class Include(Transform):
    """Keep only the listed fields (in the listed order)."""

    name: ClassVar[str] = "include"
    Config: ClassVar[type[TransformConfig]] = IncludeConfig
    example: ClassVar[dict[str, Any]] = {"fields": ["timestamp", "message"]}

    def apply(self, table: pa.Table) -> pa.Table:
        cfg = self.config
        assert isinstance(cfg, IncludeConfig)
        return table.select([f for f in cfg.fields if f in table.column_names])
