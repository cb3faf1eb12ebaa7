"""parse_regex: named groups of a regular expression become fields."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field, field_validator

from bytefreezer.transforms.base import Output, Transform, TransformConfig
from bytefreezer.transforms.tables import get_column, set_column, string_values


class ParseRegexConfig(TransformConfig):
    """Match ``field`` with ``pattern`` (RE2) and keep its named groups."""

    field: str = Field("message", description="Text field to match.")
    pattern: str = Field(description="RE2 pattern with named groups, e.g. `(?P<user>\\w+)`.")
    on_no_match: Literal["keep", "dead_letter", "drop"] = Field(
        "keep", description="Records the pattern does not match."
    )

    @field_validator("pattern")
    @classmethod
    def _named(cls, v: str) -> str:
        try:
            pc.extract_regex(pa.array([""], pa.string()), pattern=v)
        except pa.ArrowInvalid as exc:
            raise ValueError(
                f"invalid pattern (it needs named groups, RE2 syntax): {exc}"
            ) from None
        return v


class ParseRegex(Transform):
    """Regex with named groups to fields, vectorised."""

    name: ClassVar[str] = "parse_regex"
    Config: ClassVar[type[TransformConfig]] = ParseRegexConfig
    example: ClassVar[dict[str, Any]] = {"pattern": "user=(?P<user>\\w+) ip=(?P<ip>\\S+)"}

    def apply(self, table: pa.Table) -> pa.Table | Output:
        cfg = self.config
        assert isinstance(cfg, ParseRegexConfig)
        column = get_column(table, cfg.field)
        n = table.num_rows
        texts = (
            string_values(column)
            if column is not None
            else pa.chunked_array([pa.nulls(n, pa.string())])
        )
        extracted = pc.extract_regex(texts, pattern=cfg.pattern)
        matched = pc.is_valid(extracted)
        for index in range(extracted.type.num_fields):
            name = extracted.type.field(index).name
            table = set_column(table, name, pc.struct_field(extracted, index))
        missed = pc.invert(matched)
        if cfg.on_no_match == "keep" or not pc.any(missed).as_py():
            return table
        if cfg.on_no_match == "drop":
            return table.filter(matched)
        bad = table.filter(missed)
        return Output(
            table.filter(matched), bad, [f"parse_regex: no match in {cfg.field!r}"] * bad.num_rows
        )
