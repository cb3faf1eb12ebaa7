"""json_validate: check that records (or a JSON text field) are well formed and complete."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import numpy as np
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
        n = table.num_rows
        # A reason for each invalid record only (the first found: required fields, then JSON).
        reasons: dict[int, str] = {}
        for name in cfg.required_fields:
            column = get_column(table, name)
            absent = (
                range(n)
                if column is None
                else np.flatnonzero(pc.is_null(column).to_numpy(zero_copy_only=False)).tolist()
            )
            reason = f"required field {name!r} is missing"
            for row in absent:
                reasons.setdefault(row, reason)
        if cfg.field is not None:
            column = get_column(table, cfg.field)
            values = [None] * n if column is None else string_values(column).to_pylist()
            loads, invalid = orjson.loads, orjson.JSONDecodeError
            for row, text in enumerate(values):
                if text is None:
                    reasons.setdefault(row, f"field {cfg.field!r} is missing")
                    continue
                try:
                    loads(text)
                except invalid as exc:
                    reasons.setdefault(row, f"field {cfg.field!r} is not valid JSON: {exc}")
        if not reasons:
            return table
        if cfg.on_invalid == "tag":
            tags = [reasons.get(row) for row in range(n)]
            return set_column(table, cfg.tag_field, pa.array(tags, pa.string()))
        bad_rows = sorted(reasons)
        bad = np.zeros(n, dtype=bool)
        bad[bad_rows] = True
        good = table.filter(pa.array(~bad))
        if cfg.on_invalid == "drop":
            return good
        return Output(good, table.filter(pa.array(bad)), [reasons[row] for row in bad_rows])
