"""passthrough: change nothing (a placeholder step)."""

from __future__ import annotations

from typing import Any, ClassVar

import pyarrow as pa

from bytefreezer.transforms.base import Transform, TransformConfig


class PassthroughConfig(TransformConfig):
    """No options."""


class Passthrough(Transform):
    """Return the batch unchanged."""

    name: ClassVar[str] = "passthrough"
    Config: ClassVar[type[TransformConfig]] = PassthroughConfig
    example: ClassVar[dict[str, Any]] = {}

    def apply(self, table: pa.Table) -> pa.Table:
        return table
