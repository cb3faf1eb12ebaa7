"""cast: coerce fields to types, with a policy for values that do not convert."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field

from bytefreezer.transforms.base import Context, Output, Transform, TransformConfig
from bytefreezer.transforms.builtin.date_parse import DateParse, DateParseConfig
from bytefreezer.transforms.operators import as_numbers
from bytefreezer.transforms.tables import set_column, string_values

TypeName = Literal["int", "float", "string", "bool", "timestamp"]
_TRUE = {"true", "1", "yes", "y", "on", "t"}
_FALSE = {"false", "0", "no", "n", "off", "f"}


class CastConfig(TransformConfig):
    """Target types by field."""

    fields: dict[str, TypeName] = Field(
        min_length=1, description="Field → `int`, `float`, `string`, `bool` or `timestamp`."
    )
    on_error: Literal["null", "dead_letter", "keep"] = Field(
        "null",
        description="A value that does not convert becomes `null`, sends its record to the "
        "dead-letter output, or is `keep`t as text (the column becomes a string).",
    )


class Cast(Transform):
    """Type coercion with an on-error policy."""

    name: ClassVar[str] = "cast"
    Config: ClassVar[type[TransformConfig]] = CastConfig
    example: ClassVar[dict[str, Any]] = {"fields": {"status": "int", "latency": "float"}}

    def __init__(self, config: TransformConfig, context: Context | None = None) -> None:
        super().__init__(config, context)
        self._dates = DateParse(DateParseConfig(formats=["rfc3339", "unix"]))

    def apply(self, table: pa.Table) -> pa.Table | Output:
        cfg = self.config
        assert isinstance(cfg, CastConfig)
        received = table  # a dead letter keeps the value that did not convert
        failed_any = pa.repeat(False, table.num_rows)
        reasons: dict[str, str] = {}
        for name, type_name in cfg.fields.items():
            if name not in table.column_names:
                continue
            column = table.column(name)
            converted = self._convert(column, type_name)
            failed = pc.and_(pc.is_valid(column), pc.is_null(converted))
            if pc.any(failed).as_py():
                reasons[name] = type_name
                failed_any = pc.or_(failed_any, failed)
                if cfg.on_error == "keep":
                    converted = pc.if_else(failed, string_values(column), string_values(converted))
            table = set_column(table, name, converted)
        if cfg.on_error != "dead_letter" or not pc.any(failed_any).as_py():
            return table
        reason = "cannot cast " + ", ".join(f"{k} to {v}" for k, v in reasons.items())
        bad = received.filter(failed_any)
        return Output(table.filter(pc.invert(failed_any)), bad, [reason] * bad.num_rows)

    def _convert(self, column: pa.ChunkedArray, type_name: str) -> pa.ChunkedArray:
        if type_name == "string":
            return string_values(column)
        if type_name == "float":
            return as_numbers(column)
        if type_name == "int":
            if pa.types.is_integer(column.type):
                return column.cast(pa.int64())
            numbers = as_numbers(column)
            whole = pc.equal(pc.floor(numbers), numbers)
            return pc.if_else(whole, numbers, pa.scalar(None, pa.float64())).cast(pa.int64())
        if type_name == "bool":
            if pa.types.is_boolean(column.type):
                return column
            lowered = pc.utf8_lower(string_values(column))
            true = pc.is_in(lowered, pa.array(sorted(_TRUE)))
            false = pc.is_in(lowered, pa.array(sorted(_FALSE)))
            return pc.if_else(true, True, pc.if_else(false, False, pa.scalar(None, pa.bool_())))
        return self._dates.parse(column)
