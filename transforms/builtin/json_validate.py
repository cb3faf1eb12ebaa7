"""json_validate: check that records (or a JSON text field) are well formed and complete."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import orjson
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field

from bytefreezer.transforms.base import Output, Transform, TransformConfig
from bytefreezer.transforms.tables import get_column, set_column, string_values


class JsonValidateConfig(TransformConfig):
    """Validate a JSON text field and/or require fields to be present."""

    field: str | None = Field(None, description="Field holding JSON text to validate.")
    required_fields: list[str] = Field(
        default_factory=list, description="Fields every record must have (non-null)."
    )
    on_invalid: Literal["dead_letter", "drop", "tag"] = Field(
        "dead_letter",
        description="`dead_letter` invalid records with the reason, `drop` them, or `tag` them "
        "with `tag_field` = the reason and keep them.",
    )
    tag_field: str = Field("_invalid", description="Field written by `tag`.")


class JsonValidate(Transform):
    """Reject records whose JSON field does not parse or that lack required fields."""

    name: ClassVar[str] = "json_validate"
    Config: ClassVar[type[TransformConfig]] = JsonValidateConfig
    example: ClassVar[dict[str, Any]] = {"field": "payload", "required_fields": ["id"]}

    def apply(self, table: pa.Table) -> pa.Table | Output:
        cfg = self.config
        assert isinstance(cfg, JsonValidateConfig)
        reasons: list[str | None] = [None] * table.num_rows
        for name in cfg.required_fields:
            column = get_column(table, name)
            missing = [True] * table.num_rows if column is None else pc.is_null(column).to_pylist()
            for i, absent in enumerate(missing):
                if absent and reasons[i] is None:
                    reasons[i] = f"required field {name!r} is missing"
        if cfg.field is not None:
            column = get_column(table, cfg.field)
            values = (
                [None] * table.num_rows if column is None else string_values(column).to_pylist()
            )
            for i, text in enumerate(values):
                if reasons[i] is not None:
                    continue
                if text is None:
                    reasons[i] = f"field {cfg.field!r} is missing"
                    continue
                try:
                    orjson.loads(text)
                except orjson.JSONDecodeError as exc:
                    reasons[i] = f"field {cfg.field!r} is not valid JSON: {exc}"
        bad = pa.array([r is not None for r in reasons], pa.bool_())
        if not pc.any(bad).as_py():
            return table
        if cfg.on_invalid == "tag":
            return set_column(table, cfg.tag_field, pa.array(reasons, pa.string()))
        good = table.filter(pc.invert(bad))
        if cfg.on_invalid == "drop":
            return good
        return Output(good, table.filter(bad), [r for r in reasons if r is not None])
