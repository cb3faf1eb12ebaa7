"""conditional_field: act on a field (or the record) where a comparison holds."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field, model_validator

from bytefreezer.transforms.base import Transform, TransformConfig
from bytefreezer.transforms.operators import compare
from bytefreezer.transforms.tables import get_column, set_column

Operator = Literal[
    "equals", "not_equals", "contains", "starts_with", "ends_with", "matches",
    "exists", "not_exists", "gt", "gte", "lt", "lte",
]  # fmt: skip


class ConditionalFieldConfig(TransformConfig):
    """Where ``field operator value`` holds, apply ``action`` to ``target_field``."""

    field: str = Field(description="Field to test.")
    operator: Operator = Field("equals", description="Comparison.")
    value: Any = Field(None, description="Value to compare with.")
    action: Literal["remove", "replace", "set_null", "drop_record", "keep_record"] = Field(
        description="`remove` or `set_null` the target, `replace` it with `replacement`, "
        "`drop_record` matching records, or `keep_record` only matching records."
    )
    target_field: str | None = Field(None, description="Field acted on; default `field`.")
    replacement: Any = Field(None, description="New value for `replace`.")

    @model_validator(mode="after")
    def _check(self) -> ConditionalFieldConfig:
        if self.value is None and self.operator not in ("exists", "not_exists"):
            raise ValueError(f"operator {self.operator!r} needs a value")
        if self.action == "replace" and self.replacement is None:
            raise ValueError("action 'replace' needs a replacement")
        return self


class ConditionalField(Transform):
    """Remove, replace or null a field, or drop/keep records, by a comparison."""

    name: ClassVar[str] = "conditional_field"
    Config: ClassVar[type[TransformConfig]] = ConditionalFieldConfig
    example: ClassVar[dict[str, Any]] = {
        "field": "user",
        "operator": "equals",
        "value": "root",
        "action": "replace",
        "replacement": "admin",
    }

    def apply(self, table: pa.Table) -> pa.Table:
        cfg = self.config
        assert isinstance(cfg, ConditionalFieldConfig)
        mask = compare(get_column(table, cfg.field), cfg.operator, cfg.value, table.num_rows)
        if cfg.action == "drop_record":
            return table.filter(pc.invert(mask))
        if cfg.action == "keep_record":
            return table.filter(mask)
        target = cfg.target_field or cfg.field
        if target not in table.column_names:
            if cfg.action != "replace":
                return table
            current: pa.ChunkedArray = pa.chunked_array([pa.nulls(table.num_rows)])
        else:
            current = table.column(target)
        if cfg.action == "replace":
            new = pa.scalar(cfg.replacement)
            if current.type != new.type and not pa.types.is_null(current.type):
                try:
                    new = new.cast(current.type)
                except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                    current = current.cast(pa.string())
                    new = pa.scalar(str(cfg.replacement))
            elif pa.types.is_null(current.type):
                current = current.cast(new.type)
            return set_column(table, target, pc.if_else(mask, new, current))
        nulled = pc.if_else(mask, pa.scalar(None, current.type), current)
        if cfg.action == "remove" and pc.all(mask).as_py():
            return table.drop_columns([target])
        return set_column(table, target, nulled)
