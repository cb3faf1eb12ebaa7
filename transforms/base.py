"""The transform contract: a typed config and a vectorised ``apply`` over Arrow tables."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import pyarrow as pa
from pydantic import BaseModel, ConfigDict


class TransformConfig(BaseModel):
    """Base of every transform's config: frozen, typed, unknown keys rejected."""

    model_config = ConfigDict(extra="forbid", frozen=True)


@dataclass(frozen=True)
class Context:
    """What a transform knows about the batch it runs on."""

    tenant: str = ""
    dataset: str = ""
    ingest_time_ns: int = 0
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class Output:
    """A transform's result when some rows are rejected: kept rows and rejected rows.

    ``rejected`` holds the rejected input rows; ``errors`` one reason per rejected row.
    """

    table: pa.Table
    rejected: pa.Table | None = None
    errors: list[str] = field(default_factory=list)


class Transform:
    """A chain step. Subclasses set ``name`` and ``Config`` and implement ``apply``."""

    name: ClassVar[str] = ""
    Config: ClassVar[type[TransformConfig]] = TransformConfig
    example: ClassVar[dict[str, Any]] = {}

    def __init__(self, config: TransformConfig, context: Context | None = None) -> None:
        self.config = config
        self.context = context or Context()

    def apply(self, table: pa.Table) -> pa.Table | Output:
        """Transform a batch; return the new table, or an ``Output`` with rejected rows."""
        raise NotImplementedError


def drop_column(table: pa.Table, name: str) -> pa.Table:
    """``table`` without column ``name`` (unchanged when absent)."""
    index = table.schema.get_field_index(name)
    return table if index < 0 else table.remove_column(index)


def set_column(table: pa.Table, name: str, values: pa.Array | pa.ChunkedArray) -> pa.Table:
    """``table`` with column ``name`` replaced by (or appended as) ``values``."""
    index = table.schema.get_field_index(name)
    if index < 0:
        return table.append_column(name, values)
    return table.set_column(index, name, values)
