"""kv writes its pairs straight into columns; it keeps what a loop building a dict per record
keeps: the same columns in the same order, a record's last value of a key, defaults where a
record lacks a key, quoted values whole and unescaped, and objects under ``target_field``."""

from __future__ import annotations

import random
from typing import Any

import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

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
    # Several split characters, and a non-ASCII one: the column path without byte search.
    {"field": "m", "field_split": ", ", "value_split": "=:"},
    {"field": "m", "field_split": "|", "value_split": "→", "trim_value": "\"'« »"},
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


# Characters that matter to the split: separators, quotes, escapes, the marks the vectorised
# split writes (\x01, \x03), whitespace Python strips from keys, and multi-byte text.
ALPHABET = " =:,|&\"'\\\x01\x02\x03\n\tabcé«»→\u00a0\x1c"


@settings(max_examples=150, deadline=None)
@given(
    texts=st.lists(st.none() | st.text(alphabet=ALPHABET, max_size=40), max_size=12),
    config=st.sampled_from(CONFIGS),
    trim_key=st.sampled_from(["", " a", "é"]),
)
def test_kv_on_any_text_finds_what_findall_finds(
    texts: list[str | None], config: dict[str, Any], trim_key: str
) -> None:
    cfg = KvConfig.model_validate({**config, "trim_key": trim_key})
    table = pa.table({"id": list(range(len(texts))), "m": pa.array(texts, pa.string())})
    ours, theirs = Kv(cfg).apply(table), reference(table, cfg)
    assert ours.to_pylist() == theirs.to_pylist()
    assert ours.schema == theirs.schema


def test_rows_holding_the_split_marks_are_split_by_the_loop() -> None:
    cfg = KvConfig(field="m")
    table = pa.table({"m": ["a=1 b=\x01x", 'c="\x03" d=2', "e=5"]})
    assert Kv(cfg).apply(table).select(["a", "b", "c", "d", "e"]).to_pylist() == [
        {"a": "1", "b": "\x01x", "c": None, "d": None, "e": None},
        {"a": None, "b": None, "c": "\x03", "d": "2", "e": None},
        {"a": None, "b": None, "c": None, "d": None, "e": "5"},
    ]


def test_a_column_of_several_chunks_keeps_its_rows() -> None:
    cfg = KvConfig(field="m")
    chunks = pa.chunked_array([["a=1", None], ['b="x y" a=2'], [], ["a=3 a=4"]])
    table = pa.table({"m": chunks})
    assert Kv(cfg).apply(table).select(["a", "b"]).to_pylist() == [
        {"a": "1", "b": None},
        {"a": None, "b": None},
        {"a": "2", "b": "x y"},
        {"a": "4", "b": None},
    ]
