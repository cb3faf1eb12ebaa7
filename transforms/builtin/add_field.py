"""add_field: set a field to a constant or a template of other fields."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any, ClassVar

import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field

from bytefreezer.transforms.base import Transform, TransformConfig, set_column

_TEMPLATE = re.compile(r"\$\{([^}]+)\}")


class AddFieldConfig(TransformConfig):
    """Set ``field`` on every record."""

    field: str = Field(min_length=1, description="Name of the field to set.")
    value: Any = Field(
        description="The value. Strings may hold ${timestamp} (processing time, RFC 3339), "
        "${tenant_id}, ${dataset_id} and ${other_field} references."
    )
    overwrite: bool = Field(True, description="Replace the field where a record already has it.")


class AddField(Transform):
    """Set a field to a constant or a template."""

    name: ClassVar[str] = "add_field"
    Config: ClassVar[type[TransformConfig]] = AddFieldConfig
    example: ClassVar[dict[str, Any]] = {"field": "env", "value": "prod"}

    def apply(self, table: pa.Table) -> pa.Table:
        cfg = self.config
        assert isinstance(cfg, AddFieldConfig)
        values = self._values(table, cfg.value)
        existing = table.schema.get_field_index(cfg.field)
        if existing >= 0 and not cfg.overwrite:
            current = table.column(existing)
            if current.type != values.type:
                values = values.cast(pa.string()) if current.type == pa.string() else values
                if current.type != values.type:
                    return table
            values = pc.if_else(pc.is_null(current), values, current)
        return set_column(table, cfg.field, values)

    def _values(self, table: pa.Table, value: Any) -> pa.Array | pa.ChunkedArray:
        n = table.num_rows
        if not isinstance(value, str) or "${" not in value:
            return pa.array([value] * n) if not isinstance(value, str) else pa.repeat(value, n)
        pieces: list[pa.Array | pa.ChunkedArray | str] = []
        last = 0
        for match in _TEMPLATE.finditer(value):
            if match.start() > last:
                pieces.append(value[last : match.start()])
            pieces.append(self._resolve(table, match.group(1).strip()))
            last = match.end()
        if last < len(value):
            pieces.append(value[last:])
        arrays = [pa.repeat(p, n) if isinstance(p, str) else p for p in pieces]
        if len(arrays) == 1:
            return arrays[0]
        return pc.binary_join_element_wise(
            *arrays, "", null_handling="replace", null_replacement=""
        )

    def _resolve(self, table: pa.Table, name: str) -> pa.Array | pa.ChunkedArray | str:
        if name == "timestamp":
            return datetime.now(UTC).isoformat().replace("+00:00", "Z")
        if name == "tenant_id":
            return self.context.tenant
        if name == "dataset_id":
            return self.context.dataset
        if name not in table.column_names:
            return pa.nulls(table.num_rows, pa.string())
        column = table.column(name)
        return column if column.type == pa.string() else column.cast(pa.string())
