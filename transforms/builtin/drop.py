"""drop: drop the records selected by `if` / `unless` (all when neither), or a share of them."""

from __future__ import annotations

import random
from typing import Any, ClassVar

import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field, field_validator, model_validator

from bytefreezer.transforms.base import Context, Output, Transform, TransformConfig
from bytefreezer.transforms.condition import Condition, validate_expression


class DropConfig(TransformConfig):
    """Which records to drop."""

    if_: str | None = Field(None, alias="if", description="Drop records where this SQL holds.")
    unless: str | None = Field(None, description="Drop records where this SQL does not hold.")
    percentage: float = Field(
        100.0, ge=0, le=100, description="Of the selected records, drop this share at random."
    )
    always: bool = Field(
        False, description="Drop every selected record; needed with no other option."
    )
    seed: int | None = Field(None, description="Random seed, for reproducible drops.")

    @model_validator(mode="after")
    def _something(self) -> DropConfig:
        if not (self.if_ or self.unless or self.always or self.percentage < 100):
            raise ValueError("give `if`, `unless`, `percentage` below 100, or `always: true`")
        return self

    @field_validator("if_", "unless")
    @classmethod
    def _valid(cls, v: str | None) -> str | None:
        return None if v is None else validate_expression(v)


class Drop(Transform):
    """Drop records by condition or at random."""

    name: ClassVar[str] = "drop"
    Config: ClassVar[type[TransformConfig]] = DropConfig
    example: ClassVar[dict[str, Any]] = {"if": "level = 'debug'"}

    def __init__(self, config: TransformConfig, context: Context | None = None) -> None:
        super().__init__(config, context)
        assert isinstance(config, DropConfig)
        self._if = Condition(config.if_) if config.if_ else None
        self._unless = Condition(config.unless) if config.unless else None
        self._random = random.Random(config.seed)

    def apply(self, table: pa.Table) -> pa.Table | Output:
        cfg = self.config
        assert isinstance(cfg, DropConfig)
        n = table.num_rows
        selected: Any = pa.repeat(True, n)
        failures: dict[int, str] = {}
        if self._if is not None:
            mask, failures = self._if.evaluate(table)
            selected = pc.and_(selected, mask)
        if self._unless is not None:
            mask, more = self._unless.evaluate(table)
            failures.update(more)
            selected = pc.and_(selected, pc.invert(mask))
        if cfg.percentage < 100:
            draws = pa.array([self._random.random() * 100 < cfg.percentage for _ in range(n)])
            selected = pc.and_(selected, draws)
        keep = pc.invert(selected)
        if not failures:
            return table.filter(keep)
        bad = pa.array([i in failures for i in range(n)])
        return Output(
            table.filter(pc.and_(keep, pc.invert(bad))), table.filter(bad), list(failures.values())
        )
