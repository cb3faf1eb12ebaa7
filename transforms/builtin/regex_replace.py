"""regex_replace: replace what a regular expression matches in a field."""

from __future__ import annotations

import re
from typing import Any, ClassVar

import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field, field_validator

from bytefreezer.transforms.base import Transform, TransformConfig
from bytefreezer.transforms.tables import get_column, set_column, string_values


class RegexReplaceConfig(TransformConfig):
    """Replace matches of ``pattern`` in ``source_field``."""

    source_field: str = Field(description="Field to read (dotted paths reach into objects).")
    target_field: str | None = Field(None, description="Field to write; default source_field.")
    pattern: str = Field(description="Regular expression (RE2 syntax).")
    replacement: str = Field("", description="Replacement; \\1 or $1 refer to groups.")
    global_: bool = Field(
        True, alias="global", description="Replace every match, not just the first."
    )

    @field_validator("pattern")
    @classmethod
    def _compiles(cls, v: str) -> str:
        try:
            re.compile(v)
        except re.error as exc:
            raise ValueError(f"invalid regular expression: {exc}") from None
        return v


class RegexReplace(Transform):
    """Regex search and replace on one field, vectorised."""

    name: ClassVar[str] = "regex_replace"
    Config: ClassVar[type[TransformConfig]] = RegexReplaceConfig
    example: ClassVar[dict[str, Any]] = {
        "source_field": "message",
        "pattern": "password=\\S+",
        "replacement": "password=***",
    }

    def apply(self, table: pa.Table) -> pa.Table:
        cfg = self.config
        assert isinstance(cfg, RegexReplaceConfig)
        column = get_column(table, cfg.source_field)
        if column is None:
            return table
        replacement = re.sub(r"\$(\d)", r"\\\1", cfg.replacement)
        replaced = pc.replace_substring_regex(
            string_values(column),
            pattern=cfg.pattern,
            replacement=replacement,
            max_replacements=None if cfg.global_ else 1,
        )
        return set_column(table, cfg.target_field or cfg.source_field, replaced)
