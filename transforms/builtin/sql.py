"""sql: a SELECT over the batch, for anything the other transforms do not cover."""

from __future__ import annotations

from typing import Any, ClassVar

import duckdb
import pyarrow as pa
from pydantic import Field, field_validator

from bytefreezer.errors import ConfigError
from bytefreezer.transforms.base import Transform, TransformConfig
from bytefreezer.transforms.condition import duckdb_connection


class SqlConfig(TransformConfig):
    """A DuckDB query over the table ``batch``."""

    query: str = Field(description="e.g. `SELECT *, upper(level) AS lvl FROM batch WHERE x > 1`.")

    @field_validator("query")
    @classmethod
    def _select(cls, v: str) -> str:
        stripped = v.strip().rstrip(";")
        if ";" in stripped:
            raise ValueError("one statement only")
        if not stripped.lower().startswith(("select", "with", "from")):
            raise ValueError("the query must be a SELECT over `batch`")
        return stripped


class Sql(Transform):
    """Run a SQL SELECT over the batch (DuckDB)."""

    name: ClassVar[str] = "sql"
    Config: ClassVar[type[TransformConfig]] = SqlConfig
    example: ClassVar[dict[str, Any]] = {"query": "SELECT * EXCLUDE (debug) FROM batch"}

    def apply(self, table: pa.Table) -> pa.Table:
        cfg = self.config
        assert isinstance(cfg, SqlConfig)
        if table.num_columns == 0:
            return table
        if "*" not in cfg.query:  # register only the columns the query can mention
            used = [name for name in table.column_names if name in cfg.query]
            table = table.select(used or table.column_names[:1])
        con = duckdb_connection()
        con.register("batch", table)
        try:
            return con.sql(cfg.query).to_arrow_table()
        except duckdb.ParserException as exc:
            raise ConfigError(f"sql: {exc}") from None
        finally:
            con.unregister("batch")
