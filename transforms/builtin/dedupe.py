"""dedupe: drop records whose chosen fields repeat an earlier record's."""

from __future__ import annotations

from collections import deque
from itertools import compress
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field

from bytefreezer.transforms.base import Context, Transform, TransformConfig
from bytefreezer.transforms.tables import get_column, string_values


class DedupeConfig(TransformConfig):
    """Fields that identify a record."""

    fields: list[str] = Field(min_length=1, description="Records equal on all of these repeat.")
    cache_size: int = Field(
        100_000,
        ge=0,
        description="Keys remembered across batches of one pipeline run (0: within a batch only).",
    )


class Dedupe(Transform):
    """Keep the first record of each key (within a batch, and across recent batches)."""

    # The first record of each key within the batch is found from dictionary codes
    # (``first_rows``), without a loop over the records. Only those records get a key as text
    # (``record_keys``), looked up in a set of the last ``cache_size`` kept keys: per batch,
    # the work grows with the keys in question, not with the cache (``is_in`` over a full
    # cache of 100,000 keys took 8.7 ms for every batch, of 100 rows too).

    name: ClassVar[str] = "dedupe"
    Config: ClassVar[type[TransformConfig]] = DedupeConfig
    example: ClassVar[dict[str, Any]] = {"fields": ["event_id"]}

    def __init__(self, config: TransformConfig, context: Context | None = None) -> None:
        super().__init__(config, context)
        self._seen: set[str] = set()
        self._order: deque[list[str]] = deque()  # the keys in ``_seen``, oldest first

    def apply(self, table: pa.Table) -> pa.Table:
        cfg = self.config
        assert isinstance(cfg, DedupeConfig)
        if table.num_rows == 0:
            return table
        keep = first_rows(table, cfg.fields)
        if cfg.cache_size:
            rows = np.flatnonzero(keep)
            # From the key fields alone, of the rows still in question.
            present = {f: c for f in cfg.fields if (c := get_column(table, f)) is not None}
            keyed = pa.table(present) if present else table
            keys = record_keys(keyed.take(pa.array(rows)), cfg.fields).to_pylist()
            if self._seen:
                earlier = np.fromiter((key in self._seen for key in keys), bool, len(keys))
                keep[rows[earlier]] = False
                keys = list(compress(keys, ~earlier))
            self._remember(keys, cfg.cache_size)
        return table if keep.all() else table.filter(pa.array(keep))

    def _remember(self, keys: list[str], limit: int) -> None:
        """Add a batch's new keys (distinct, none in the set); forget the oldest past ``limit``."""
        keys = keys[-limit:]
        self._seen.update(keys)
        self._order.append(keys)
        while len(self._seen) > limit:
            oldest = self._order[0]
            extra = len(self._seen) - limit
            self._seen.difference_update(oldest[:extra])
            if extra >= len(oldest):
                self._order.popleft()
            else:
                self._order[0] = oldest[extra:]


def record_keys(table: pa.Table, fields: list[str]) -> pa.Array:
    """One text per record, equal for two records exactly when each of ``fields`` has the same
    text in both: each value written as its length in bytes, a colon and itself (``N`` for null
    or missing), the fields joined with ``|`` — no value can run into the next."""
    parts: list[pa.Array] = []
    for name in fields:
        column = get_column(table, name)
        if column is None:
            parts.append(pa.repeat("N", table.num_rows))
            continue
        text = string_values(column).combine_chunks()
        sized = pc.binary_join_element_wise(pc.cast(pc.binary_length(text), pa.string()), text, ":")
        parts.append(pc.coalesce(sized, pa.scalar("N")))
    if len(parts) == 1:
        return parts[0]
    return pc.binary_join_element_wise(*parts, "|")


def first_rows(table: pa.Table, fields: list[str]) -> np.ndarray:
    """Which records of ``table`` are the first with their values of ``fields`` (as text; null
    and missing alike), from dictionary codes: each field's, combined into one code per record
    and encoded again, which numbers the keys in order of first appearance."""
    combined: np.ndarray | None = None
    for name in fields:
        column = get_column(table, name)
        if column is None:  # missing: the same in every record
            continue
        encoded = pc.dictionary_encode(string_values(column).combine_chunks())
        width = len(encoded.dictionary) + 1
        codes = encoded.indices.fill_null(width - 1).to_numpy(zero_copy_only=False)
        combined = codes.astype(np.int64) if combined is None else combined * width + codes
        combined = _first_appearance_codes(combined)  # dense again: the next product fits
    if combined is None:
        combined = np.zeros(table.num_rows, dtype=np.int64)
    before = np.maximum.accumulate(np.concatenate(([-1], combined[:-1])))
    first = combined > before
    if not np.array_equal(combined[first], np.arange(np.count_nonzero(first))):
        first = np.zeros(len(combined), dtype=bool)  # codes not in order of appearance
        first[np.unique(combined, return_index=True)[1]] = True
    return first


def _first_appearance_codes(values: np.ndarray) -> np.ndarray:
    codes: np.ndarray = pc.dictionary_encode(pa.array(values)).indices.to_numpy(
        zero_copy_only=False
    )
    return codes.astype(np.int64)
