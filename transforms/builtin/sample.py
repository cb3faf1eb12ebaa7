"""sample: keep a share of records, at random or deterministically by a key field."""

from __future__ import annotations

import random
from typing import Any, ClassVar

import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field, model_validator

from bytefreezer.transforms.base import Context, Transform, TransformConfig
from bytefreezer.transforms.tables import get_column, stable_hash


class SampleConfig(TransformConfig):
    """Keep ``percentage`` percent of records, or one in ``rate``."""

    percentage: float | None = Field(None, gt=0, le=100, description="Share of records kept.")
    rate: int | None = Field(None, ge=1, description="Keep one record in this many.")
    key_field: str | None = Field(
        None,
        description="Decide by a hash of this field: the same value is always kept or always "
        "dropped, in every run and on every worker.",
    )
    seed: int | None = Field(None, description="Random seed when there is no key field.")

    @model_validator(mode="after")
    def _one(self) -> SampleConfig:
        if (self.percentage is None) == (self.rate is None):
            raise ValueError("give exactly one of `percentage` and `rate`")
        return self


class Sample(Transform):
    """Keep a share of records."""

    name: ClassVar[str] = "sample"
    Config: ClassVar[type[TransformConfig]] = SampleConfig
    example: ClassVar[dict[str, Any]] = {"percentage": 10, "key_field": "session_id"}

    def __init__(self, config: TransformConfig, context: Context | None = None) -> None:
        super().__init__(config, context)
        assert isinstance(config, SampleConfig)
        self._random = random.Random(config.seed)
        self._share = config.percentage / 100 if config.percentage else 1 / (config.rate or 1)
        self._counter = 0

    def apply(self, table: pa.Table) -> pa.Table:
        cfg = self.config
        assert isinstance(cfg, SampleConfig)
        n = table.num_rows
        if cfg.key_field is not None:
            column = get_column(table, cfg.key_field)
            if column is None:
                column = pa.nulls(n, pa.string())
            threshold = pa.scalar(min(int(self._share * 2**64), 2**64 - 1), pa.uint64())
            return table.filter(pc.less(stable_hash(column), threshold))
        if cfg.rate is not None:
            start = self._counter
            self._counter += n
            return table.filter(pa.array([(start + i) % cfg.rate == 0 for i in range(n)]))
        return table.filter(pa.array([self._random.random() < self._share for _ in range(n)]))
