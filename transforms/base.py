"""The transform contract: a typed config and a vectorised ``apply`` over Arrow tables."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

import pyarrow as pa
from pydantic import BaseModel, ConfigDict

from bytefreezer.transforms.tables import drop_column, rows_to_table, set_column

__all__ = [
    "Context",
    "ObjectSource",
    "Output",
    "RecordTransform",
    "Transform",
    "TransformConfig",
    "drop_column",
    "set_column",
]


class TransformConfig(BaseModel):
    """Base of every transform's config: frozen, typed, unknown keys rejected."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class ObjectSource(Protocol):
    """Read-only access to objects in the stack's buckets (lookup tables, GeoIP databases)."""

    def read(self, bucket: str, key: str) -> bytes:
        """The object's bytes; ``FileNotFoundError`` when absent."""
        ...

    def version(self, bucket: str, key: str) -> str:
        """A token that changes whenever the object changes (ETag, mtime and size)."""
        ...


@dataclass(frozen=True)
class Context:
    """What a transform knows about the batch it runs on."""

    tenant: str = ""
    dataset: str = ""
    ingest_time_ns: int = 0
    resources: ObjectSource | None = None
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


class RecordTransform(Transform):
    """For plugin authors: implement ``process(record)`` instead of a vectorised ``apply``.

    ``process`` returns a dict (the new record), a list of dicts (fan out), or None (drop). An
    exception sends that one record to the dead-letter output with the transform's name and
    the error. Slower than ``apply`` (one Python call per record), but simple.
    """

    def process(self, record: dict[str, Any]) -> dict[str, Any] | list[dict[str, Any]] | None:
        """Transform one record."""
        raise NotImplementedError

    def apply(self, table: pa.Table) -> pa.Table | Output:
        rows: list[dict[str, Any]] = []
        rejected: list[int] = []
        errors: list[str] = []
        for index, record in enumerate(table.to_pylist()):
            try:
                result = self.process(record)
                if result is None:
                    continue
                if isinstance(result, dict):
                    rows.append(result)
                elif isinstance(result, list) and all(isinstance(r, dict) for r in result):
                    rows.extend(result)
                else:
                    kind = type(result).__name__
                    raise TypeError(
                        f"process() must return a dict, a list of dicts or None, not {kind}"
                    )
            except Exception as exc:
                rejected.append(index)
                errors.append(f"{type(exc).__name__}: {exc}")
        out = rows_to_table(rows)
        if not rejected:
            return out
        return Output(out, table.take(pa.array(rejected, pa.int64())), errors)
