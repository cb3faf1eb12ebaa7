"""severity_label: syslog severity numbers to names, vectorised."""

from __future__ import annotations

from typing import Any, ClassVar

import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field

from bytefreezer.transforms import Transform, TransformConfig
from bytefreezer.transforms.tables import set_column

NAMES = ["emergency", "alert", "critical", "error", "warning", "notice", "info", "debug"]


class SeverityLabelConfig(TransformConfig):
    """Where the number is and where the name goes."""

    field: str = Field("severity", description="Field holding the numeric severity (0-7).")
    target_field: str = Field("severity_label", description="Field receiving the name.")


class SeverityLabel(Transform):
    """Name each record's syslog severity."""

    name: ClassVar[str] = "severity_label"
    Config: ClassVar[type[TransformConfig]] = SeverityLabelConfig
    example: ClassVar[dict[str, Any]] = {"field": "severity"}

    def apply(self, table: pa.Table) -> pa.Table:
        cfg = self.config
        assert isinstance(cfg, SeverityLabelConfig)
        if cfg.field not in table.column_names:
            return table
        codes = pc.cast(table.column(cfg.field), pa.int64())
        in_range = pc.and_(pc.greater_equal(codes, 0), pc.less(codes, len(NAMES)))
        safe = pc.if_else(in_range, codes, pa.scalar(None, pa.int64()))
        return set_column(table, cfg.target_field, pa.array(NAMES).take(safe.combine_chunks()))
