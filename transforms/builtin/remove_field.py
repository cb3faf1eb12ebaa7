"""remove_field: delete one or more fields."""

from __future__ import annotations

from typing import Any, ClassVar

import pyarrow as pa
from pydantic import Field, model_validator

from bytefreezer.transforms.base import Transform, TransformConfig


class RemoveFieldConfig(TransformConfig):
    """Remove ``field`` and/or every name in ``fields``."""

    field: str | None = Field(None, description="One field to remove.")
    fields: list[str] = Field(default_factory=list, description="Several fields to remove.")

    @model_validator(mode="after")
    def _some(self) -> RemoveFieldConfig:
        if not self.field and not self.fields:
            raise ValueError("give `field` or `fields`")
        return self


class RemoveField(Transform):
    """Delete fields (absent fields are fine)."""

    name: ClassVar[str] = "remove_field"
    Config: ClassVar[type[TransformConfig]] = RemoveFieldConfig
    example: ClassVar[dict[str, Any]] = {"fields": ["password", "token"]}

    def apply(self, table: pa.Table) -> pa.Table:
        cfg = self.config
        assert isinstance(cfg, RemoveFieldConfig)
        doomed = set(cfg.fields) | ({cfg.field} if cfg.field else set())
        return table.drop_columns([c for c in table.column_names if c in doomed])
