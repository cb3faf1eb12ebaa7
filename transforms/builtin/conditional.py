"""conditional: keep or drop records by comparing one field with a value."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field, model_validator

from bytefreezer.transforms.base import Transform, TransformConfig
from bytefreezer.transforms.operators import compare
from bytefreezer.transforms.tables import get_column

Operator = Literal[
    "eq", "ne", "contains", "not_contains", "exists", "not_exists", "gt", "gte", "lt", "lte"
]


class ConditionalConfig(TransformConfig):
    """Keep (or drop) the records where ``field operator value`` holds."""

    field: str = Field(description="Field to test (dotted paths reach into objects).")
    operator: Operator = Field(
        "eq", description="Comparison; gt/gte/lt/lte compare numbers as numbers."
    )
    value: Any = Field(
        None, description="Value to compare with (not needed for exists/not_exists)."
    )
    action: Literal["keep", "drop"] = Field("keep", description="What to do with matching records.")

    @model_validator(mode="after")
    def _value_given(self) -> ConditionalConfig:
        if self.value is None and self.operator not in ("exists", "not_exists"):
            raise ValueError(f"operator {self.operator!r} needs a value")
        return self


class Conditional(Transform):
    """The original's conditional filter, with every operator evaluated."""

    name: ClassVar[str] = "conditional"
    Config: ClassVar[type[TransformConfig]] = ConditionalConfig
    example: ClassVar[dict[str, Any]] = {"field": "status", "operator": "gte", "value": 500}

    def apply(self, table: pa.Table) -> pa.Table:
        cfg = self.config
        assert isinstance(cfg, ConditionalConfig)
        mask = compare(get_column(table, cfg.field), cfg.operator, cfg.value, table.num_rows)
        return table.filter(mask if cfg.action == "keep" else pc.invert(mask))
