"""Vectorised comparisons shared by ``conditional``, ``conditional_field`` and others.

Every operator yields false (never null) for records without the field, except ``not_exists``.
Ordering operators compare numbers as numbers (strings that hold numbers included) and other
values as text.
"""

from __future__ import annotations

import re
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from bytefreezer.transforms.tables import Column, string_values


def as_numbers(column: Column) -> pa.ChunkedArray:
    """``column`` as float64; values that are not numbers become null."""
    if isinstance(column, pa.Array):
        column = pa.chunked_array([column])
    kind = column.type
    if pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_boolean(kind):
        return column.cast(pa.float64())
    strings = string_values(column)
    try:
        return strings.cast(pa.float64())
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        values = []
        for value in strings.to_pylist():
            try:
                values.append(float(value) if value is not None else None)
            except ValueError:
                values.append(None)
        return pa.chunked_array([pa.array(values, pa.float64())])


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def compare(column: Column | None, operator: str, value: Any, n: int) -> pa.ChunkedArray:
    """A mask: where ``column <operator> value`` holds."""
    if operator == "exists":
        return pa.chunked_array([pa.repeat(False, n)]) if column is None else pc.is_valid(column)
    if operator == "not_exists":
        return pa.chunked_array([pa.repeat(True, n)]) if column is None else pc.is_null(column)
    if column is None:
        return pa.chunked_array([pa.repeat(False, n)])
    if operator in ("gt", "gte", "lt", "lte"):
        func = {"gt": pc.greater, "gte": pc.greater_equal, "lt": pc.less, "lte": pc.less_equal}
        if _is_number(value) or _numeric_text(value):
            mask = func[operator](as_numbers(column), float(value))
        else:
            mask = func[operator](string_values(column), str(value))
        return pc.fill_null(mask, False)
    if operator in ("eq", "equals", "ne", "not_equals"):
        if isinstance(value, bool) and pa.types.is_boolean(column.type):
            mask = pc.equal(column, value)
        elif _is_number(value) and not pa.types.is_string(column.type):
            mask = pc.equal(as_numbers(column), float(value))
        else:
            mask = pc.equal(string_values(column), _text(value))
        mask = pc.fill_null(mask, False)
        return pc.invert(mask) if operator in ("ne", "not_equals") else mask
    strings = string_values(column)
    text = _text(value)
    if operator == "contains":
        mask = pc.match_substring(strings, text)
    elif operator == "not_contains":
        mask = pc.invert(pc.fill_null(pc.match_substring(strings, text), True))
    elif operator == "starts_with":
        mask = pc.starts_with(strings, text)
    elif operator == "ends_with":
        mask = pc.ends_with(strings, text)
    elif operator == "matches":
        mask = pc.match_substring_regex(strings, text)
    else:
        raise ValueError(f"unknown operator {operator!r}")
    return pc.fill_null(mask, False)


def _numeric_text(value: Any) -> bool:
    return (
        isinstance(value, str) and re.fullmatch(r"-?\d+(\.\d+)?([eE][-+]?\d+)?", value) is not None
    )


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
