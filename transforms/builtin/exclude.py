"""exclude: remove the listed fields."""

from __future__ import annotations

from typing import Any, ClassVar

import pyarrow as pa
from pydantic import Field

from bytefreezer.transforms.base import Transform, TransformConfig


class ExcludeConfig(TransformConfig):
    """The fields to remove."""

    fields: list[str] = Field(min_length=1, description="Fields removed; every other is kept.")


class Exclude(Transform):
    """Remove the listed fields."""

    name: ClassVar[str] = "exclude"
    Config: ClassVar[type[TransformConfig]] = ExcludeConfig
    example: ClassVar[dict[str, Any]] = {"fields": ["password"]}

    def apply(self, table: pa.Table) -> pa.Table:
        cfg = self.config
        assert isinstance(cfg, ExcludeConfig)
        return table.drop_columns([f for f in table.column_names if f in set(cfg.fields)])
