"""mutate: many small field edits, applied in a fixed order."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field

from bytefreezer.transforms.base import Transform, TransformConfig
from bytefreezer.transforms.builtin.cast import Cast, CastConfig
from bytefreezer.transforms.tables import drop_column, set_column, string_values


class MutateConfig(TransformConfig):
    """Applied in this order: copy, rename, convert, split, join, gsub, lowercase, uppercase,
    strip, merge, update, replace, remove."""

    copy_: dict[str, str] = Field(
        default_factory=dict, alias="copy", description="source → destination."
    )
    rename: dict[str, str] = Field(default_factory=dict, description="old name → new name.")
    convert: dict[str, Literal["int", "float", "string", "bool"]] = Field(
        default_factory=dict, description="field → type (unconvertible values become null)."
    )
    split: dict[str, str] = Field(default_factory=dict, description="field → separator (to array).")
    join: dict[str, str] = Field(default_factory=dict, description="array field → separator.")
    gsub: list[list[str]] = Field(
        default_factory=list, description="[field, pattern, replacement] triples (RE2)."
    )
    lowercase: list[str] = Field(default_factory=list, description="Fields lower-cased.")
    uppercase: list[str] = Field(default_factory=list, description="Fields upper-cased.")
    strip: list[str] = Field(default_factory=list, description="Fields whitespace-trimmed.")
    merge: dict[str, str] = Field(
        default_factory=dict, description="destination → source: append source to the array."
    )
    update: dict[str, Any] = Field(
        default_factory=dict, description="field → value, only where the field exists."
    )
    replace: dict[str, Any] = Field(default_factory=dict, description="field → value, always set.")
    remove: list[str] = Field(default_factory=list, description="Fields removed.")


class Mutate(Transform):
    """Logstash-style mutate with every operation."""

    name: ClassVar[str] = "mutate"
    Config: ClassVar[type[TransformConfig]] = MutateConfig
    example: ClassVar[dict[str, Any]] = {"rename": {"src": "source"}, "lowercase": ["method"]}

    def apply(self, table: pa.Table) -> pa.Table:
        cfg = self.config
        assert isinstance(cfg, MutateConfig)
        n = table.num_rows
        for source, target in cfg.copy_.items():
            if source in table.column_names:
                table = set_column(table, target, table.column(source))
        for old, new in cfg.rename.items():
            if old in table.column_names:
                values = table.column(old)
                table = set_column(drop_column(table, old), new, values)
        if cfg.convert:
            converted = Cast(CastConfig(fields=cfg.convert)).apply(table)
            assert isinstance(converted, pa.Table)
            table = converted
        for field, sep in cfg.split.items():
            if field in table.column_names:
                table = set_column(
                    table, field, pc.split_pattern(string_values(table.column(field)), sep)
                )
        for field, sep in cfg.join.items():
            if field in table.column_names and pa.types.is_list(table.column(field).type):
                strings = pc.cast(table.column(field), pa.list_(pa.string()))
                table = set_column(table, field, pc.binary_join(strings, sep))
        for triple in cfg.gsub:
            field, pattern, replacement = triple
            if field in table.column_names:
                values = pc.replace_substring_regex(
                    string_values(table.column(field)), pattern=pattern, replacement=replacement
                )
                table = set_column(table, field, values)
        for names, func in (
            (cfg.lowercase, pc.utf8_lower),
            (cfg.uppercase, pc.utf8_upper),
            (cfg.strip, pc.utf8_trim_whitespace),
        ):
            for field in names:
                if field in table.column_names:
                    table = set_column(table, field, func(string_values(table.column(field))))
        for target, source in cfg.merge.items():
            if source in table.column_names:
                table = set_column(table, target, _merge(table, target, source))
        for field, value in cfg.update.items():
            if field in table.column_names:
                column = table.column(field)
                new = pc.if_else(
                    pc.is_valid(column), pa.scalar(value), pa.scalar(None, pa.scalar(value).type)
                )
                table = set_column(table, field, new)
        for field, value in cfg.replace.items():
            table = set_column(table, field, pa.repeat(pa.scalar(value), n))
        return table.drop_columns([f for f in cfg.remove if f in table.column_names])


def _merge(table: pa.Table, target: str, source: str) -> pa.Array:
    rows_target = (
        table.column(target).to_pylist()
        if target in table.column_names
        else [None] * table.num_rows
    )
    rows_source = table.column(source).to_pylist()
    merged = []
    for a, b in zip(rows_target, rows_source, strict=True):
        left = [] if a is None else (a if isinstance(a, list) else [a])
        right = [] if b is None else (b if isinstance(b, list) else [b])
        merged.append(left + right)
    try:
        return pa.array(merged)
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        return pa.array([[str(x) for x in m] for m in merged], pa.list_(pa.string()))
