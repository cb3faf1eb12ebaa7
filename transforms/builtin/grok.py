"""grok: parse text into fields with named patterns (``%{IP:client}``), vectorised on RE2."""

from __future__ import annotations

import re
from typing import Any, ClassVar, Literal

import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field, model_validator

from bytefreezer.errors import ConfigError
from bytefreezer.transforms.base import Context, Output, Transform, TransformConfig
from bytefreezer.transforms.grok_patterns import PATTERNS
from bytefreezer.transforms.operators import as_numbers
from bytefreezer.transforms.tables import get_column, set_column, string_values

_REFERENCE = re.compile(r"%\{(\w+)(?::([\w.\[\]@-]+))?(?::(int|integer|float|string|bool))?\}")
_MAX_DEPTH = 32


class Compiled:
    """One grok pattern as an RE2 regex with named groups, and what each group becomes."""

    def __init__(self, pattern: str, definitions: dict[str, str]) -> None:
        self.captures: list[tuple[str, str, str | None]] = []  # (group, field, type)
        self.regex = self._expand(pattern, definitions, 0)
        try:  # compile with RE2, the engine that runs it
            pc.extract_regex(pa.array([""], pa.string()), pattern=self.regex)
        except pa.ArrowInvalid as exc:
            raise ConfigError(f"grok pattern {pattern!r} does not compile: {exc}") from None

    def _expand(self, pattern: str, definitions: dict[str, str], depth: int) -> str:
        if depth > _MAX_DEPTH:
            raise ConfigError("grok patterns nest too deeply (a pattern refers to itself?)")

        def replace(match: re.Match[str]) -> str:
            name, field, kind = match.group(1), match.group(2), match.group(3)
            if name not in definitions:
                raise ConfigError(f"unknown grok pattern %{{{name}}}")
            body = self._expand(definitions[name], definitions, depth + 1)
            if not field:
                return f"(?:{body})"
            group = f"g{len(self.captures)}"
            self.captures.append((group, field.replace("[", "").replace("]", "."), kind))
            return f"(?P<{group}>{body})"

        return _REFERENCE.sub(replace, pattern)


class GrokConfig(TransformConfig):
    """Match ``field`` against ``patterns``."""

    field: str = Field("message", description="Text field to parse.")
    patterns: list[str] = Field(
        min_length=1, description="Grok patterns, tried in order, e.g. `%{COMMONAPACHELOG}`."
    )
    pattern_definitions: dict[str, str] = Field(
        default_factory=dict, description="Custom patterns by name, usable as %{NAME}."
    )
    break_on_match: bool = Field(
        True, description="Stop at the first pattern that matches; else apply every pattern."
    )
    overwrite: bool = Field(True, description="Captured fields replace existing ones.")
    on_no_match: Literal["keep", "tag", "dead_letter", "drop"] = Field(
        "tag",
        description="Records no pattern matches are kept, tagged with `tag_field`, "
        "dead-lettered or dropped.",
    )
    tag_field: str = Field("_grokparsefailure", description="Boolean field written by `tag`.")

    @model_validator(mode="after")
    def _compile(self) -> GrokConfig:
        definitions = {**PATTERNS, **self.pattern_definitions}
        for pattern in self.patterns:
            Compiled(pattern, definitions)
        return self


class Grok(Transform):
    """Grok parsing with the standard pattern set, custom patterns and typed captures."""

    name: ClassVar[str] = "grok"
    Config: ClassVar[type[TransformConfig]] = GrokConfig
    example: ClassVar[dict[str, Any]] = {"field": "message", "patterns": ["%{COMMONAPACHELOG}"]}

    def __init__(self, config: TransformConfig, context: Context | None = None) -> None:
        super().__init__(config, context)
        assert isinstance(config, GrokConfig)
        definitions = {**PATTERNS, **config.pattern_definitions}
        self._compiled = [Compiled(p, definitions) for p in config.patterns]

    def apply(self, table: pa.Table) -> pa.Table | Output:
        cfg = self.config
        assert isinstance(cfg, GrokConfig)
        n = table.num_rows
        source = get_column(table, cfg.field)
        text = (
            string_values(source)
            if source is not None
            else pa.chunked_array([pa.nulls(n, pa.string())])
        )
        matched_any = pa.chunked_array([pa.repeat(False, n)])
        fields: dict[str, pa.ChunkedArray] = {}
        for compiled in self._compiled:
            pending = pc.invert(matched_any) if cfg.break_on_match else None
            extracted = pc.extract_regex(text, pattern=compiled.regex)
            matched = pc.is_valid(extracted)
            if pending is not None:
                matched = pc.and_(matched, pending)
            if not pc.any(matched).as_py():
                continue
            for group, field, kind in compiled.captures:
                values = pc.struct_field(extracted, group)
                values = pc.if_else(matched, values, pa.scalar(None, pa.string()))
                values = pc.if_else(pc.equal(values, ""), pa.scalar(None, pa.string()), values)
                typed = _typed(values, kind)
                fields[field] = typed if field not in fields else pc.coalesce(fields[field], typed)
            matched_any = pc.or_(matched_any, matched)
        for field, values in fields.items():
            if field in table.column_names and not cfg.overwrite:
                continue
            if field in table.column_names and table.column(field).type == values.type:
                values = pc.coalesce(values, table.column(field))
            table = set_column(table, field, values)
        missed = pc.invert(matched_any)
        if not pc.any(missed).as_py() or cfg.on_no_match == "keep":
            return table
        if cfg.on_no_match == "tag":
            return set_column(table, cfg.tag_field, missed)
        kept = table.filter(matched_any)
        if cfg.on_no_match == "drop":
            return kept
        bad = table.filter(missed)
        return Output(kept, bad, [f"grok: no pattern matched {cfg.field!r}"] * bad.num_rows)


def _typed(values: pa.ChunkedArray, kind: str | None) -> pa.ChunkedArray:
    if kind in ("int", "integer"):
        return pc.cast(pc.trunc(as_numbers(values)), pa.int64())
    if kind == "float":
        return as_numbers(values)
    if kind == "bool":
        lowered = pc.utf8_lower(values)
        return pc.if_else(
            pc.is_null(values),
            pa.scalar(None, pa.bool_()),
            pc.is_in(lowered, pa.array(["true", "1", "yes"])),
        )
    return values
