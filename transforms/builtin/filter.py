"""filter: keep (or drop) the records where a SQL condition holds."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field, field_validator

from bytefreezer.transforms.base import Context, Output, Transform, TransformConfig
from bytefreezer.transforms.condition import Condition, validate_expression


class FilterConfig(TransformConfig):
    """Keep or drop records by a condition, e.g. ``status >= 500 AND path LIKE '/api/%'``."""

    condition: str = Field(description="SQL boolean expression over the record's fields.")
    action: Literal["keep", "drop"] = Field(
        "keep", description="`keep` the matching records, or `drop` them."
    )

    @field_validator("condition")
    @classmethod
    def _valid(cls, v: str) -> str:
        return validate_expression(v)


class Filter(Transform):
    """Keep or drop records by a condition; records the condition fails on are dead-lettered."""

    name: ClassVar[str] = "filter"
    Config: ClassVar[type[TransformConfig]] = FilterConfig
    example: ClassVar[dict[str, Any]] = {"condition": "status >= 500"}

    def __init__(self, config: TransformConfig, context: Context | None = None) -> None:
        super().__init__(config, context)
        assert isinstance(config, FilterConfig)
        self._condition = Condition(config.condition)
        self._keep = config.action == "keep"

    def apply(self, table: pa.Table) -> pa.Table | Output:
        mask, failures = self._condition.evaluate(table)
        keep = mask if self._keep else pc.invert(mask)
        if not failures:
            return table.filter(keep)
        bad = pa.array([i in failures for i in range(table.num_rows)])
        keep = pc.and_(keep, pc.invert(bad))
        return Output(table.filter(keep), table.filter(bad), list(failures.values()))
