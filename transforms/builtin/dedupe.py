"""dedupe: drop records whose chosen fields repeat an earlier record's."""

from __future__ import annotations

from collections import OrderedDict
from typing import Any, ClassVar

import pyarrow as pa
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

    name: ClassVar[str] = "dedupe"
    Config: ClassVar[type[TransformConfig]] = DedupeConfig
    example: ClassVar[dict[str, Any]] = {"fields": ["event_id"]}

    def __init__(self, config: TransformConfig, context: Context | None = None) -> None:
        super().__init__(config, context)
        self._seen: OrderedDict[tuple[Any, ...], None] = OrderedDict()

    def apply(self, table: pa.Table) -> pa.Table:
        cfg = self.config
        assert isinstance(cfg, DedupeConfig)
        columns = []
        for name in cfg.fields:
            column = get_column(table, name)
            columns.append(
                [None] * table.num_rows if column is None else string_values(column).to_pylist()
            )
        keep = []
        batch: set[tuple[Any, ...]] = set()
        for key in zip(*columns, strict=True):
            fresh = key not in batch and key not in self._seen
            keep.append(fresh)
            if fresh:
                batch.add(key)
                if cfg.cache_size:
                    self._seen[key] = None
        while len(self._seen) > cfg.cache_size:
            self._seen.popitem(last=False)
        return table.filter(pa.array(keep, pa.bool_()))
