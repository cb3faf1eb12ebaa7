"""json_validate gives the reason of each invalid record only; it keeps, drops, tags and
dead-letters what a reason per record gave: the first reason found (required fields in their
order, then the JSON field), records in their order."""

from __future__ import annotations

import random
from typing import Any

import orjson
import pyarrow as pa
import pytest

from bytefreezer.transforms.base import Output
from bytefreezer.transforms.builtin.json_validate import JsonValidate, JsonValidateConfig

TEXTS = ['{"a": 1}', "[1, 2]", "3", '"x"', "{oops", "", "nul", '{"a": }', None]


def reasons_per_record(rows: list[dict[str, Any]], cfg: JsonValidateConfig) -> list[str | None]:
    reasons: list[str | None] = []
    for row in rows:
        reason = next(
            (f"required field {n!r} is missing" for n in cfg.required_fields if row.get(n) is None),
            None,
        )
        if reason is None and cfg.field is not None:
            text = row.get(cfg.field)
            if text is None:
                reason = f"field {cfg.field!r} is missing"
            else:
                try:
                    orjson.loads(text)
                except orjson.JSONDecodeError as exc:
                    reason = f"field {cfg.field!r} is not valid JSON: {exc}"
        reasons.append(reason)
    return reasons


@pytest.mark.parametrize("on_invalid", ["dead_letter", "drop", "tag"])
@pytest.mark.parametrize(
    "fields", [{"field": "j", "required_fields": ["a", "b"]}, {"field": "j"}, {"field": "gone"}]
)
def test_json_validate_keeps_the_first_reason_of_each_record(
    fields: dict[str, Any], on_invalid: str
) -> None:
    cfg = JsonValidateConfig.model_validate({**fields, "on_invalid": on_invalid})
    rng = random.Random(f"{fields}{on_invalid}")
    for size in [0, 1, 30, 30]:
        rows = [
            {
                "id": i,
                "a": rng.choice([1, None, 2]),
                "b": rng.choice(["x", None]),
                "j": rng.choice(TEXTS),
            }
            for i in range(size)
        ]
        table = pa.Table.from_pylist(
            rows,
            schema=pa.schema(
                [("id", pa.int64()), ("a", pa.int64()), ("b", pa.string()), ("j", pa.string())]
            ),
        )
        expected = reasons_per_record(rows, cfg)
        out = JsonValidate(cfg).apply(table)
        good = [r["id"] for r, why in zip(rows, expected, strict=True) if why is None]
        bad = [(r["id"], why) for r, why in zip(rows, expected, strict=True) if why is not None]
        if not bad:
            assert out is table
        elif on_invalid == "tag":
            assert isinstance(out, pa.Table)
            assert out.column("_invalid").to_pylist() == expected
        elif on_invalid == "drop":
            assert isinstance(out, pa.Table)
            assert out.column("id").to_pylist() == good
        else:
            assert isinstance(out, Output) and out.rejected is not None
            assert out.table.column("id").to_pylist() == good
            assert list(zip(out.rejected.column("id").to_pylist(), out.errors, strict=True)) == bad
