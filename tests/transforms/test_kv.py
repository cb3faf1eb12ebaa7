"""kv writes its pairs straight into columns; it keeps what a loop building a dict per record
keeps: the same columns in the same order, a record's last value of a key, defaults where a
record lacks a key, quoted values whole and unescaped, and objects under ``target_field``."""

from __future__ import annotations

import random
from typing import Any

import pyarrow as pa
import pytest

from bytefreezer.transforms.builtin.kv import _QUOTES, Kv, KvConfig, _value, pair_pattern
from bytefreezer.transforms.tables import get_column, rows_to_table, set_column, string_values


def reference(table: pa.Table, cfg: KvConfig) -> pa.Table:
    """kv as a dict per record, then a table from the dicts."""
    column = get_column(table, cfg.field)
    if column is None:
        return table
    pair = pair_pattern(cfg.field_split, cfg.value_split)
    rows = []
    for text in string_values(column).to_pylist():
        parsed: dict[str, str] = {}
        for key, value in pair.findall(text or ""):
            key = key.strip(cfg.trim_key) if cfg.trim_key else key.strip()
            if not key or (cfg.include_keys and key not in cfg.include_keys):
                continue
            if key in cfg.exclude_keys:
                continue
            trimmed = value.strip(cfg.trim_value)
            parsed[cfg.prefix + key] = (
                _value(value, cfg.trim_value) if value[:1] in _QUOTES else trimmed
            )
        rows.append({**cfg.defaults, **parsed})
    if cfg.target_field:
        return set_column(table, cfg.target_field, pa.array([r or None for r in rows]))
    extracted = rows_to_table(rows)
    for name in extracted.column_names:
        table = set_column(table, name, extracted.column(name))
    return table


KEYS = ["a", "b", "level", " c", "x.y", "msg"]
VALUES = ["1", "", "two", '"say \\"hi\\" now"', "'it\\'s'", '"a b"', "C:\\temp", '"', "'x"]


def line(rng: random.Random, split: str, between: str) -> str | None:
    if rng.random() < 0.1:
        return None
    parts = []
    for _ in range(rng.randrange(0, 6)):
        if rng.random() < 0.15:
            parts.append(rng.choice(["junk", "=", "==", " "]))
        else:
            parts.append(f"{rng.choice(KEYS)}{between}{rng.choice(VALUES)}")
    return split.join(parts)


CONFIGS: list[dict[str, Any]] = [
    {"field": "m"},
    {"field": "m", "prefix": "kv_", "include_keys": ["a", "b", "c"], "defaults": {"kv_c": "-"}},
    {"field": "m", "exclude_keys": ["b"], "trim_key": " c", "trim_value": "'"},
    {"field": "m", "field_split": "&", "value_split": ":", "target_field": "q"},
    {"field": "m", "target_field": "q", "defaults": {"z": "0"}, "trim_value": ""},
]


@pytest.mark.parametrize("config", CONFIGS)
def test_kv_keeps_what_a_dict_per_record_keeps(config: dict[str, Any]) -> None:
    cfg = KvConfig.model_validate(config)
    rng = random.Random(str(config))
    for rows in [0, 1, 5, 40, 40, 40]:
        texts = [line(rng, cfg.field_split, cfg.value_split) for _ in range(rows)]
        table = pa.table({"id": list(range(rows)), "m": pa.array(texts, pa.string())})
        assert Kv(cfg).apply(table).to_pylist() == reference(table, cfg).to_pylist()
        assert Kv(cfg).apply(table).schema == reference(table, cfg).schema


def test_a_later_value_of_a_key_wins_and_defaults_fill_the_rest() -> None:
    cfg = KvConfig(field="m", defaults={"b": "none"})
    table = pa.table({"m": ["a=1 a=2", "b=3", None]})
    out = Kv(cfg).apply(table)
    assert out.column_names == ["m", "b", "a"]
    assert out.select(["a", "b"]).to_pylist() == [
        {"a": "2", "b": "none"},
        {"a": None, "b": "3"},
        {"a": None, "b": "none"},
    ]
