"""dedupe on Arrow's kernels keeps exactly the records a loop over the values' text keeps: the
first of each key in a batch, and none whose key one of the last ``cache_size`` kept records
had."""

from __future__ import annotations

import random
from collections import OrderedDict
from typing import Any

import pyarrow as pa
import pytest

from bytefreezer.transforms.builtin import dedupe
from bytefreezer.transforms.builtin.dedupe import Dedupe, DedupeConfig
from bytefreezer.transforms.tables import string_values

# Values that would run into each other if keys were joined naively: separators, lengths,
# digits, empty text, null.
TEXTS = ["", "a", "1", "1|", "|1", "2:a", "a:", ":", "|", "N", "10", "1:1|1", None]


def reference(batches: list[pa.Table], fields: list[str], cache_size: int) -> list[list[int]]:
    """The ids each batch keeps, by a loop over tuples of the fields' text (null or missing
    as None), remembering the last ``cache_size`` kept keys."""
    seen: OrderedDict[tuple[Any, ...], None] = OrderedDict()
    kept = []
    for table in batches:
        columns = [
            string_values(table[name]).to_pylist()
            if name in table.column_names
            else [None] * table.num_rows
            for name in fields
        ]
        batch: set[tuple[Any, ...]] = set()
        ids = []
        for row, key in enumerate(zip(*columns, strict=True)):
            if key in batch or key in seen:
                continue
            batch.add(key)
            ids.append(table["id"][row].as_py())
            if cache_size:
                seen[key] = None
        while len(seen) > cache_size:
            seen.popitem(last=False)
        kept.append(ids)
    return kept


def batches(rng: random.Random, count: int) -> list[pa.Table]:
    out, next_id = [], 0
    for _ in range(count):
        rows = rng.randrange(0, 60)
        columns: dict[str, Any] = {"id": list(range(next_id, next_id + rows))}
        next_id += rows
        columns["a"] = [rng.choice(TEXTS) for _ in range(rows)]
        if rng.random() < 0.5:  # a field of numbers in some batches, text in others
            columns["b"] = [rng.choice([1, 2, 10, None]) for _ in range(rows)]
        else:
            columns["b"] = pa.array([rng.choice(["1", "2", "x", None]) for _ in range(rows)])
        if rng.random() < 0.8:  # "c" missing from some batches
            columns["c"] = [rng.choice(TEXTS[:4]) for _ in range(rows)]
        out.append(pa.table(columns))
    return out


@pytest.mark.parametrize("cache_size", [0, 1, 7, 100_000])
@pytest.mark.parametrize("fields", [["a"], ["a", "b"], ["b", "c", "a"], ["missing"]])
def test_dedupe_keeps_what_a_loop_over_the_values_keeps(fields: list[str], cache_size: int) -> None:
    rng = random.Random(f"{fields}{cache_size}")
    for _ in range(5):
        tables = batches(rng, 6)
        step = Dedupe(DedupeConfig(fields=fields, cache_size=cache_size))
        kept = [step.apply(table)["id"].to_pylist() for table in tables]
        assert kept == reference(tables, fields, cache_size)


def test_keys_of_different_values_differ_however_they_join() -> None:
    table = pa.table({"x": ["1|", "1", "", None, "2:a"], "y": ["1", "|1", None, "", "a"]})
    keys = dedupe.record_keys(table, ["x", "y"]).to_pylist()
    assert len(set(keys)) == 5


def test_first_rows_hold_if_codes_come_in_another_order(monkeypatch: pytest.MonkeyPatch) -> None:
    """The first records are read off codes numbered in order of first appearance; codes in
    any other order fall back to sorting them."""
    table = pa.table({"k": ["b", "a", "b", "c", "a"]})
    assert dedupe.first_rows(table, ["k"]).tolist() == [True, True, False, True, False]
    numbered = dedupe._first_appearance_codes
    monkeypatch.setattr(dedupe, "_first_appearance_codes", lambda values: 9 - numbered(values))
    assert dedupe.first_rows(table, ["k"]).tolist() == [True, True, False, True, False]
